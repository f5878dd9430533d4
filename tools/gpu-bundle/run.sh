#!/usr/bin/env bash
# lorafleet GPU check: ./run.sh [--out DIR] [--smoke]
#
# Self-contained (issue 18, docs/gpu.md): needs Linux x86-64 and, for the real check, the
# NVIDIA driver with its Vulkan ICD. Uses the node's own Node when it is 20 or newer, else
# unpacks the bundled one (xz, or python3's lzma, does the unpacking). Writes gpu-report.json
# and summary.txt to DIR (default ./gpu-report) and exits non-zero naming what failed.
#   --smoke   the same code path on Dawn's OpenGL ES backend (llvmpipe without a GPU), tiny sizes
# Environment: LORAFLEET_BUNDLE_NODE=bundled forces the bundled Node; VK_DRIVER_FILES points
# the Vulkan loader at an ICD manifest; LORAFLEET_PYTHON names a python with torch.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${PWD}/gpu-report"
ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out)
      [[ $# -ge 2 ]] || { echo "run.sh: --out needs a directory" >&2; exit 2; }
      OUT="$2"
      shift 2
      ;;
    -h | --help)
      sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      ARGS+=("$1")
      shift
      ;;
  esac
done

if [[ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]]; then
  echo "run.sh: this bundle is for Linux x86-64, not $(uname -s)-$(uname -m)" >&2
  exit 2
fi

# A Node of the node's own, when it is new enough (≥ 20) and not overridden.
system_node() {
  local node major
  node="$(command -v node 2>/dev/null)" || return 1
  major="$("${node}" -p 'process.versions.node.split(".")[0]' 2>/dev/null)" || return 1
  [[ "${major}" =~ ^[0-9]+$ && "${major}" -ge 20 ]] || return 1
  echo "${node}"
}

# unxz SRC DEST: whichever decompressor the node has.
unxz_to() {
  if command -v xz >/dev/null 2>&1; then
    xz -dc "$1" >"$2"
  elif command -v busybox >/dev/null 2>&1 && busybox xz -dc "$1" >"$2" 2>/dev/null; then
    :
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"
  else
    echo "run.sh: cannot unpack Node: no xz, busybox or python3 here. Install xz-utils, or Node >= 20" >&2
    return 1
  fi
}

# The bundled Node, unpacked once into the bundle (or a cache dir when it is read-only).
bundled_node() {
  local want dir node
  want="$(cut -d' ' -f1 "${HERE}/node/node.sha256")"
  for dir in "${HERE}/node" "${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/lorafleet-gpu-bundle/${want:0:16}" "${TMPDIR:-/tmp}/lorafleet-gpu-bundle-${want:0:16}"; do
    node="${dir}/node"
    if [[ -x "${node}" ]] && [[ "$(sha256sum "${node}" | cut -d' ' -f1)" == "${want}" ]]; then
      echo "${node}"
      return 0
    fi
    if ! mkdir -p "${dir}" 2>/dev/null || [[ ! -w "${dir}" ]]; then
      continue
    fi
    echo "run.sh: unpacking Node $(cat "${HERE}/node/VERSION") into ${dir}" >&2
    unxz_to "${HERE}/node/node.xz" "${node}.partial" || return 1
    if [[ "$(sha256sum "${node}.partial" | cut -d' ' -f1)" != "${want}" ]]; then
      rm -f "${node}.partial"
      echo "run.sh: the unpacked Node does not match node/node.sha256 (damaged copy?)" >&2
      return 1
    fi
    chmod 755 "${node}.partial"
    mv "${node}.partial" "${node}"
    echo "${node}"
    return 0
  done
  echo "run.sh: no writable place to unpack Node (tried the bundle, the cache dir and TMPDIR)" >&2
  return 1
}

NODE=""
if [[ "${LORAFLEET_BUNDLE_NODE:-}" != "bundled" ]]; then
  NODE="$(system_node || true)"
fi
if [[ -z "${NODE}" ]]; then
  NODE="$(bundled_node)"
fi

# Whether the node's own libstdc++ is new enough for dawn.node (GCC 12's GLIBCXX_3.4.30).
system_libstdcxx_ok() {
  local lib
  for lib in $({ /sbin/ldconfig -p || ldconfig -p; } 2>/dev/null | awk '/libstdc\+\+\.so\.6 .*x86-64/ {print $NF}') \
    /usr/lib/x86_64-linux-gnu/libstdc++.so.6 /usr/lib64/libstdc++.so.6; do
    if [[ -e "${lib}" ]] && grep -q GLIBCXX_3.4.30 "${lib}"; then
      return 0
    fi
  done
  return 1
}

# The bundled Vulkan loader first: Dawn dlopens libvulkan.so.1, and a node with only the
# driver has none of its own. The bundled libstdc++ only where the node's is too old.
LIBS="${HERE}/lib"
if ! system_libstdcxx_ok; then
  LIBS="${LIBS}:${HERE}/lib/compat"
  echo "run.sh: the node's libstdc++ predates GCC 12; using the bundled one" >&2
fi
export LD_LIBRARY_PATH="${LIBS}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
mkdir -p "${OUT}"
echo "run.sh: node ${NODE} ($("${NODE}" --version)), report in ${OUT}" >&2
exec "${NODE}" "${HERE}/app/gpu-check.cjs" main --bundle "${HERE}" --out "${OUT}" ${ARGS[@]+"${ARGS[@]}"}
