#!/usr/bin/env bash
# ensure-services.sh: make Postgres and Redis answer on loopback, then recreate the test database.
#
# Idempotent; safe to run again and again (CI, developers, other scripts). It:
#   1. installs postgresql / redis-server (and their clients) with apt-get when missing,
#   2. starts them when they do not answer, and waits (bounded) until they do,
#   3. makes sure user `postgres` can log in over TCP loopback without a password
#      (an apt-installed Postgres wants a password there: the script adds `trust` lines for
#      local sockets, 127.0.0.1/32 and ::1/128 to the top of pg_hba.conf and reloads),
#   4. drops (terminating its connections) and recreates the database $LORAFLEET_TEST_DB,
#      owned by postgres, UTF8,
#   5. warns when Redis' maxmemory-policy is not `noeviction` (RELIABILITY R23),
#   6. installs the system packages later test suites need (chromium for browser tests,
#      libopenblas0-pthread for the BLAS backend, Mesa GLES for webgpu on llvmpipe, libvulkan1
#      and xz-utils for the GPU bundle) when they are missing.
#
# It only starts or installs services when their host is loopback; for any other host it
# just waits for them. It never stops a running service.
#
# Environment (all optional):
#   LORAFLEET_TEST_DB                 database to recreate (default lorafleet_test)
#   LORAFLEET_PG_HOST / _PG_PORT      Postgres address (default 127.0.0.1 / 5432)
#   LORAFLEET_REDIS_HOST / _REDIS_PORT Redis address (default 127.0.0.1 / 6379)
#   LORAFLEET_SERVICES_WAIT_S         how long to wait for each service to answer (default 60)
#   LORAFLEET_SKIP_SYSTEM_PACKAGES=1  do not install chromium / libopenblas0-pthread / …
#
# apt-get runs without a time limit (a slow mirror only makes the run slower); it waits for
# the dpkg lock instead of failing, retries downloads, and any real install error fails the run.
set -euo pipefail

PG_HOST="${LORAFLEET_PG_HOST:-127.0.0.1}"
PG_PORT="${LORAFLEET_PG_PORT:-5432}"
PG_USER="postgres"
REDIS_HOST="${LORAFLEET_REDIS_HOST:-127.0.0.1}"
REDIS_PORT="${LORAFLEET_REDIS_PORT:-6379}"
TEST_DB="${LORAFLEET_TEST_DB:-lorafleet_test}"
WAIT_S="${LORAFLEET_SERVICES_WAIT_S:-60}"
SKIP_SYSTEM_PACKAGES="${LORAFLEET_SKIP_SYSTEM_PACKAGES:-0}"
# Packages later suites need: headless browser tests, the OpenBLAS-backed tfjs backend, Mesa's
# GLES for the webgpu backend on llvmpipe, and for the GPU bundle (tests/gpu-bundle) the Vulkan
# loader it ships and xz, which packs its Node.
SYSTEM_PACKAGES=(chromium fonts-liberation libopenblas0-pthread libegl1 libegl-mesa0 libgles2 libgl1-mesa-dri libvulkan1 xz-utils)
HBA_MARKER="# lorafleet: trust loopback for local tests (tools/scripts/ensure-services.sh)"

APT_OPTS=(-q -o Acquire::Retries=5 -o DPkg::Lock::Timeout=3600)
APT_UPDATED=0

log() { printf '[ensure-services] %s\n' "$*"; }
warn() { printf '[ensure-services] WARNING: %s\n' "$*" >&2; }
die() {
  printf '[ensure-services] ERROR: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------- privileges and packages

as_root() {
  if [[ "${EUID}" -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    die "need root (or passwordless sudo) to run: $*"
  fi
}

as_postgres() {
  if [[ "$(id -un)" == "postgres" ]]; then
    "$@"
  elif [[ "${EUID}" -eq 0 ]] && command -v runuser >/dev/null 2>&1; then
    runuser -u postgres -- "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n -u postgres "$@"
  else
    die "cannot run a command as the postgres OS user: $*"
  fi
}

pkg_installed() {
  # shellcheck disable=SC2016 # ${Status} is a dpkg-query field, not a shell variable
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q ' installed$'
}

apt_update_once() {
  if [[ "${APT_UPDATED}" -eq 0 ]]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" update 9>&- ||
      die "apt-get update failed (see the output above)"
    APT_UPDATED=1
  fi
}

# apt_install PKG...: install whichever of PKG are missing; fail loudly if that does not work.
apt_install() {
  local missing=() p
  for p in "$@"; do
    pkg_installed "$p" || missing+=("$p")
  done
  [[ "${#missing[@]}" -eq 0 ]] && return 0
  command -v apt-get >/dev/null 2>&1 ||
    die "missing packages (${missing[*]}) and no apt-get on this machine: install them by hand"
  apt_update_once
  log "apt-get install ${missing[*]} (no time limit; this can take a few minutes)"
  local start="${SECONDS}"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y \
    --no-install-recommends "${missing[@]}" 9>&-; then
    # An interrupted earlier dpkg run is the one failure apt cannot get past by itself.
    warn "apt-get install failed; running 'dpkg --configure -a' and retrying once"
    as_root env DEBIAN_FRONTEND=noninteractive dpkg --configure -a 9>&- || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y \
      --no-install-recommends "${missing[@]}" 9>&- ||
      die "apt-get install ${missing[*]} failed (see the output above)"
  fi
  for p in "${missing[@]}"; do
    pkg_installed "$p" || die "package $p is still not installed after apt-get install"
  done
  log "installed ${missing[*]} in $((SECONDS - start))s"
}

is_loopback() {
  case "$1" in
    127.* | localhost | ::1 | '[::1]') return 0 ;;
    *) return 1 ;;
  esac
}

# wait_for NAME CMD...: poll CMD until it succeeds, at most WAIT_S seconds.
wait_for() {
  local name="$1"
  shift
  local deadline=$((SECONDS + WAIT_S)) next_note=$((SECONDS + 10))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      return 1
    fi
    if ((SECONDS >= next_note)); then
      log "still waiting for ${name}..."
      next_note=$((SECONDS + 10))
    fi
    sleep 0.5
  done
}

# ---------------------------------------------------------------- Postgres

pg_ready() { pg_isready -q -h "${PG_HOST}" -p "${PG_PORT}" -t 2 >/dev/null 2>&1; }

# psql_admin ARGS...: psql as user postgres over TCP, never prompting for a password.
psql_admin() {
  PGCONNECT_TIMEOUT=5 psql -X -w -q -h "${PG_HOST}" -p "${PG_PORT}" -U "${PG_USER}" -d postgres "$@"
}

pg_login_ok() { psql_admin -Atc 'SELECT 1' >/dev/null 2>&1; }

pg_log_hint() {
  if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters 2>/dev/null >&2 || true
    local logfile
    logfile="$(pg_lsclusters -h 2>/dev/null | awk -v port="${PG_PORT}" '$3 == port {print $7; exit}')"
    if [[ -n "${logfile}" && -r "${logfile}" ]]; then
      printf '%s\n' "--- last lines of ${logfile}:" >&2
      tail -n 20 "${logfile}" >&2 || true
    fi
  fi
}

# Start the local cluster that listens on PG_PORT, creating one if none exists.
start_local_postgres() {
  local line ver name status
  line="$(pg_lsclusters -h 2>/dev/null | awk -v port="${PG_PORT}" '$3 == port {print; exit}')"
  if [[ -z "${line}" ]]; then
    if [[ -n "$(pg_lsclusters -h 2>/dev/null)" ]]; then
      pg_lsclusters >&2 || true
      die "no local Postgres cluster is configured on port ${PG_PORT}; set LORAFLEET_PG_PORT or fix the cluster"
    fi
    ver="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -n | tail -n 1)"
    [[ -n "${ver}" ]] || die "Postgres is installed but no server version was found under /usr/lib/postgresql"
    log "creating Postgres cluster ${ver}/main on port ${PG_PORT}"
    as_root pg_createcluster --port "${PG_PORT}" "${ver}" main 9>&-
    line="$(pg_lsclusters -h 2>/dev/null | awk -v port="${PG_PORT}" '$3 == port {print; exit}')"
  fi
  read -r ver name _ status _ <<<"${line}"
  if [[ "${status}" == online* ]]; then
    log "Postgres cluster ${ver}/${name} is online but does not answer on ${PG_HOST}:${PG_PORT}; waiting"
  else
    log "starting Postgres cluster ${ver}/${name}"
    as_root pg_ctlcluster --skip-systemctl-redirect "${ver}" "${name}" start 9>&- ||
      {
        pg_log_hint
        die "pg_ctlcluster ${ver} ${name} start failed"
      }
  fi
}

# Add trust for local sockets and loopback TCP at the top of pg_hba.conf (first match wins).
configure_pg_trust() {
  local hba tmp
  hba="$(as_postgres psql -X -w -Atq -p "${PG_PORT}" -c 'SHOW hba_file' 2>/dev/null)" ||
    die "user postgres cannot log in over ${PG_HOST}:${PG_PORT} without a password, and the local socket (peer auth) did not work either: configure pg_hba.conf to trust 127.0.0.1/32 and ::1/128"
  [[ -n "${hba}" && -f "${hba}" ]] || die "could not locate pg_hba.conf (got '${hba}')"
  if grep -qF "${HBA_MARKER}" "${hba}"; then
    log "pg_hba.conf (${hba}) already carries the lorafleet trust lines"
  else
    log "configuring trust for postgres on loopback in ${hba}"
    as_root cp -p "${hba}" "${hba}.lorafleet.bak"
    tmp="$(mktemp)"
    {
      printf '%s\n' "${HBA_MARKER}"
      printf '%-8s%-16s%-16s%-24s%s\n' local all all '' trust
      printf '%-8s%-16s%-16s%-24s%s\n' host all all 127.0.0.1/32 trust
      printf '%-8s%-16s%-16s%-24s%s\n' host all all ::1/128 trust
      printf '%s\n\n' "# end lorafleet"
      as_root cat "${hba}"
    } >"${tmp}"
    # Rewrite in place so the file keeps its owner and mode.
    as_root tee "${hba}" <"${tmp}" >/dev/null
    rm -f "${tmp}"
  fi
  as_postgres psql -X -w -Atq -p "${PG_PORT}" -c 'SELECT pg_reload_conf()' >/dev/null ||
    die "could not reload the Postgres configuration"
  wait_for "Postgres password-less login" pg_login_ok ||
    die "user postgres still cannot log in over ${PG_HOST}:${PG_PORT} without a password after editing ${hba}"
}

ensure_postgres() {
  if ! command -v pg_isready >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
    apt_install postgresql-client
  fi
  if pg_ready; then
    log "Postgres answers on ${PG_HOST}:${PG_PORT}"
  else
    is_loopback "${PG_HOST}" || {
      wait_for "Postgres at ${PG_HOST}:${PG_PORT}" pg_ready ||
        die "Postgres at ${PG_HOST}:${PG_PORT} did not answer within ${WAIT_S}s (not a local host: not starting it)"
    }
    if ! pg_ready; then
      if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
        log "Postgres server is not installed"
        apt_install postgresql
      fi
      # The package's own start may have worked (it does not in containers: policy-rc.d).
      pg_ready || start_local_postgres
      wait_for "Postgres at ${PG_HOST}:${PG_PORT}" pg_ready || {
        pg_log_hint
        die "Postgres did not answer on ${PG_HOST}:${PG_PORT} within ${WAIT_S}s"
      }
      log "Postgres is up on ${PG_HOST}:${PG_PORT}"
    fi
  fi
  if ! pg_login_ok; then
    is_loopback "${PG_HOST}" ||
      die "cannot log in to ${PG_HOST}:${PG_PORT} as ${PG_USER} without a password"
    configure_pg_trust
  fi
  log "Postgres server version $(psql_admin -Atc 'SHOW server_version')"
}

recreate_test_db() {
  local out
  out="$(
    psql_admin -v ON_ERROR_STOP=1 -v db="${TEST_DB}" 2>&1 <<'SQL'
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') AS existed \gset
-- Nobody new may connect while we drop it; then end the sessions that are there.
\if :existed
ALTER DATABASE :"db" ALLOW_CONNECTIONS false;
\endif
SELECT count(pg_terminate_backend(pid)) AS terminated
  FROM pg_stat_activity WHERE datname = :'db' AND pid <> pg_backend_pid() \gset
SELECT current_setting('server_version_num')::int >= 130000 AS has_force \gset
\if :has_force
DROP DATABASE IF EXISTS :"db" WITH (FORCE);
\else
DROP DATABASE IF EXISTS :"db";
\endif
CREATE DATABASE :"db" OWNER postgres TEMPLATE template0 ENCODING 'UTF8';
\echo existed=:existed terminated=:terminated
SQL
  )" || die "could not recreate database ${TEST_DB}: ${out}"
  local existed terminated
  existed="$(sed -n 's/.*existed=\([a-z]*\).*/\1/p' <<<"${out}")"
  terminated="$(sed -n 's/.*terminated=\([0-9]*\).*/\1/p' <<<"${out}")"
  if [[ "${existed}" == "t" ]]; then
    log "dropped database ${TEST_DB} (terminated ${terminated:-0} connection(s)) and created it afresh (owner postgres, UTF8)"
  else
    log "created database ${TEST_DB} (owner postgres, UTF8)"
  fi
}

# ---------------------------------------------------------------- Redis

redis_reply() { timeout 5 redis-cli -h "${REDIS_HOST}" -p "${REDIS_PORT}" "$@" 2>&1; }
redis_ping() { [[ "$(redis_reply ping)" == "PONG" ]]; }

start_local_redis() {
  local logfile="${TMPDIR:-/tmp}/lorafleet-redis-${REDIS_PORT}.log"
  log "starting redis-server on ${REDIS_HOST}:${REDIS_PORT} (no persistence; log ${logfile})"
  redis-server --daemonize yes --bind "${REDIS_HOST}" --port "${REDIS_PORT}" \
    --save "" --appendonly no --maxmemory-policy noeviction \
    --dir "${TMPDIR:-/tmp}" --logfile "${logfile}" 9>&- ||
    die "redis-server failed to start (see ${logfile})"
}

ensure_redis() {
  command -v redis-cli >/dev/null 2>&1 || apt_install redis-tools
  if redis_ping; then
    log "Redis answers on ${REDIS_HOST}:${REDIS_PORT}"
  else
    local reply
    reply="$(redis_reply ping || true)"
    case "${reply}" in
      *NOAUTH* | *WRONGPASS*) die "Redis on ${REDIS_HOST}:${REDIS_PORT} requires a password; the tests expect none" ;;
      *LOADING*) log "Redis on ${REDIS_HOST}:${REDIS_PORT} is loading its dataset; waiting" ;;
      *)
        is_loopback "${REDIS_HOST}" || {
          wait_for "Redis at ${REDIS_HOST}:${REDIS_PORT}" redis_ping ||
            die "Redis at ${REDIS_HOST}:${REDIS_PORT} did not answer within ${WAIT_S}s (not a local host: not starting it)"
        }
        if ! redis_ping; then
          if ! command -v redis-server >/dev/null 2>&1; then
            log "Redis server is not installed"
            apt_install redis-server
          fi
          redis_ping || start_local_redis
        fi
        ;;
    esac
    wait_for "Redis at ${REDIS_HOST}:${REDIS_PORT}" redis_ping ||
      die "Redis did not answer PING on ${REDIS_HOST}:${REDIS_PORT} within ${WAIT_S}s (last reply: $(redis_reply ping || true))"
    log "Redis is up on ${REDIS_HOST}:${REDIS_PORT}"
  fi
  local policy version
  version="$(redis_reply info server | sed -n 's/^redis_version:\([^[:space:]]*\).*/\1/p')"
  policy="$(redis_reply config get maxmemory-policy | sed -n 2p)"
  log "Redis server version ${version:-unknown}, maxmemory-policy ${policy:-unknown}"
  if [[ -z "${policy}" ]]; then
    warn "could not read Redis maxmemory-policy (CONFIG disabled?); BullMQ needs noeviction (RELIABILITY R23)"
  elif [[ "${policy}" != "noeviction" ]]; then
    warn "Redis maxmemory-policy is '${policy}', not 'noeviction': Redis may evict BullMQ keys and lose jobs (RELIABILITY R23)"
  fi
}

# ---------------------------------------------------------------- system packages for later suites

ensure_system_packages() {
  if [[ "${SKIP_SYSTEM_PACKAGES}" == "1" ]]; then
    log "skipping system packages (LORAFLEET_SKIP_SYSTEM_PACKAGES=1)"
    return 0
  fi
  local missing=() p
  for p in "${SYSTEM_PACKAGES[@]}"; do
    pkg_installed "$p" || missing+=("$p")
  done
  if [[ "${#missing[@]}" -eq 0 ]]; then
    log "system packages present: ${SYSTEM_PACKAGES[*]}"
  else
    apt_install "${missing[@]}"
  fi
}

# ---------------------------------------------------------------- main

validate_settings() {
  [[ "${WAIT_S}" =~ ^[0-9]+$ ]] || die "LORAFLEET_SERVICES_WAIT_S must be a whole number of seconds"
  [[ "${TEST_DB}" =~ ^[A-Za-z_][A-Za-z0-9_]{0,62}$ ]] ||
    die "LORAFLEET_TEST_DB='${TEST_DB}' is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*, at most 63 chars)"
  [[ "${TEST_DB}" != "postgres" && "${TEST_DB}" != template0 && "${TEST_DB}" != template1 ]] ||
    die "refusing to recreate the system database '${TEST_DB}'"
}

main() {
  local start="${SECONDS}"
  validate_settings
  # Two runs at once (parallel checkouts on one machine) must not race on the database.
  if command -v flock >/dev/null 2>&1; then
    local lock="${TMPDIR:-/tmp}/lorafleet-ensure-services.lock"
    # fd 9 holds the lock; every daemon this script starts gets `9>&-` so it cannot keep it.
    exec 9>>"${lock}"
    flock -w 900 9 || die "another ensure-services.sh held ${lock} for 15 minutes"
  fi
  ensure_postgres
  ensure_redis
  recreate_test_db
  ensure_system_packages
  log "ready in $((SECONDS - start))s: postgres://${PG_USER}@${PG_HOST}:${PG_PORT}/${TEST_DB} redis://${REDIS_HOST}:${REDIS_PORT}"
}

main "$@"
