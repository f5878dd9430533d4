#!/usr/bin/env node
// @ts-check
// `npm run demo`: lorafleet's whole job on one machine, in minutes.
//
//   build → Postgres + Redis → fresh demo database, migrations, tenant + API key
//   → api + one worker (child processes) → upload demo/<task> train/valid over REST
//   → LoRA job (r=16 on every linear layer) → live progress (step, loss, ETA) → PEFT adapter
//   download → held-out evaluation: base model 5-shot vs base + adapter 0-shot → before/after
//   table → last line: DEMO metric=<headline metric> base=<x> adapter=<y> wall_s=<s>
//
// Tasks (tools/demo/tasks.mjs): `authorship` (the default: who wrote a sentence, Melville or
// an early or a modern president; metric accuracy, with the chance level beside it) and
// `g2p` (--task g2p: spell a word in phonemes; metric phoneme_error_rate, lower is better).
//
// Options: --task <name> (or LORAFLEET_DEMO_TASK); --keep (or LORAFLEET_DEMO_KEEP=1) leaves the
// api and worker running afterwards so the dashboard can be explored; Ctrl-C stops them. Knobs
// (environment) are listed in docs/demo.md; the main ones: LORAFLEET_DEMO_STEPS,
// LORAFLEET_DEMO_TEST_LIMIT, LORAFLEET_DEMO_MODEL, DATABASE_URL, REDIS_URL,
// LORAFLEET_DEMO_SKIP_BUILD.
import { fork, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  createWriteStream,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { mergeResults } from './evaluate.mjs';
import { pct, TASKS, taskNamed } from './tasks.mjs';

const require = createRequire(import.meta.url);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const started = Date.now();
const argv = process.argv.slice(2);
const env = process.env;

/** Thrown by fail() to unwind; the demo is already shutting down. */
class DemoExit extends Error {}
/** @type {Set<import('node:child_process').ChildProcess>} */
const children = new Set();
let shuttingDown = false;
/** This run's private BullMQ key prefix (its keys are deleted when the demo stops). */
let queuePrefix = '';

if (argv.includes('--help') || argv.includes('-h')) {
  console.log(`Usage: npm run demo [-- --task authorship|g2p] [--keep]

Runs lorafleet end to end on this machine (see docs/demo.md) and prints the base model's
5-shot score next to the fine-tuned adapter's on the task's held-out test split.

  --task    authorship (default): who wrote a sentence, Melville or an early or a modern
            president (accuracy); g2p: spell a word in phonemes (phoneme error rate)
  --keep    leave the api (and dashboard) and the worker running at the end; Ctrl-C stops them`);
  process.exit(0);
}

// ------------------------------------------------------------------ settings
/** A bad setting: nothing has started yet, so print and exit 2 at once. */
const badSetting = (message) => {
  console.error(`demo: ${message}`);
  process.exit(2);
};
const positiveInt = (name, fallback) => {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0)
    badSetting(`${name} must be a positive integer (got "${raw}")`);
  return n;
};
const positiveNumber = (name, fallback) => {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) badSetting(`${name} must be a positive number (got "${raw}")`);
  return n;
};

/** `--task <name>`, else LORAFLEET_DEMO_TASK, else the headline task. */
function taskName() {
  const i = argv.indexOf('--task');
  const name = i >= 0 ? argv[i + 1] : env.LORAFLEET_DEMO_TASK || 'authorship';
  if (!name || !(name in TASKS))
    badSetting(`--task must be one of ${Object.keys(TASKS).join(', ')} (got "${name ?? ''}")`);
  return name;
}
const task = taskNamed(taskName());

/** Every linear layer of a Llama block: the setting that learned G2P in the PyTorch reference. */
const ALL_LINEAR = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

const settings = {
  model: env.LORAFLEET_DEMO_MODEL || 'lorafleet-tiny-llama',
  modelsDir: path.resolve(ROOT, env.LORAFLEET_MODELS_DIR || 'models'),
  dataDir: path.resolve(ROOT, env.LORAFLEET_DEMO_DATA || task.dataDir),
  runDir: path.resolve(ROOT, env.LORAFLEET_DEMO_DIR || '.lorafleet/demo'),
  database: env.LORAFLEET_DEMO_DB || 'lorafleet_demo',
  steps: positiveInt('LORAFLEET_DEMO_STEPS', task.training.steps),
  batchSize: positiveInt('LORAFLEET_DEMO_BATCH_SIZE', 16),
  learningRate: positiveNumber('LORAFLEET_DEMO_LR', task.training.learningRate),
  rank: positiveInt('LORAFLEET_DEMO_RANK', 16),
  targets: (env.LORAFLEET_DEMO_TARGETS || ALL_LINEAR.join(','))
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean),
  trainLimit: positiveInt('LORAFLEET_DEMO_TRAIN_LIMIT', 0) || null,
  testLimit: positiveInt('LORAFLEET_DEMO_TEST_LIMIT', 0) || null,
  backend: env.LORAFLEET_BACKEND || 'auto',
  skipBuild: env.LORAFLEET_DEMO_SKIP_BUILD === '1',
  keep: argv.includes('--keep') || env.LORAFLEET_DEMO_KEEP === '1',
  databaseUrl: env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres',
  redisUrl: env.REDIS_URL || 'redis://127.0.0.1:6379',
  /** Where the demo's own Postgres and Redis live when it has to start them (not root). */
  servicesDir: path.resolve(ROOT, env.LORAFLEET_DEMO_SERVICES_DIR || '.lorafleet/services'),
};
if (!/^[a-z_][a-z0-9_]{0,62}$/.test(settings.database)) {
  badSetting(`LORAFLEET_DEMO_DB must be a lower-case identifier (got "${settings.database}")`);
}

// ------------------------------------------------------------------ output helpers
const isTTY = Boolean(process.stdout.isTTY);
const color = (code) => (text) =>
  isTTY && !env.NO_COLOR ? `\u001b[${code}m${text}\u001b[0m` : text;
const bold = color('1');
const dim = color('2');
const green = color('32');
const red = color('31');
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(0).padStart(4)}s`;
/** A path as the user should type it: relative inside the repository, absolute outside. */
const shown = (p) => {
  const rel = path.relative(ROOT, p);
  return rel.startsWith('..') || path.isAbsolute(rel) ? p : rel;
};
const say = (text) => console.log(`${dim(elapsed())}  ${text}`);
const phase = (text) => console.log(`${dim(elapsed())}  ${bold(`▸ ${text}`)}`);

/** Prints the message (and what to do) and exits 1 after cleaning up. */
function fail(message, hint) {
  console.error(`\n${red('demo failed:')} ${message}${hint ? `\n\n${hint}` : ''}`);
  void shutdown(1);
  // shutdown exits; keep TypeScript-minded readers calm about control flow.
  throw new DemoExit();
}

// ------------------------------------------------------------------ child processes

async function stopChild(child, signal = 'SIGTERM', graceMs = 8000) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

async function shutdown(code) {
  if (shuttingDown) return;
  shuttingDown = true;
  await Promise.all([...children].map((child) => stopChild(child)));
  await cleanupRedis().catch(() => undefined);
  process.exit(code);
}

process.on('SIGINT', () => {
  console.error(`\n${red('interrupted')}: stopping the api, the worker and the evaluators…`);
  void shutdown(130);
});
process.on('SIGTERM', () => void shutdown(143));
process.on('exit', () => {
  for (const child of children)
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

/** Runs a command to completion; returns its stdout, fails the demo with its output otherwise. */
function runQuiet(what, command, args, extraEnv = {}) {
  const result = spawnSync(command, args, {
    cwd: ROOT,
    env: { ...env, ...extraEnv },
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  if (result.status !== 0) {
    fail(
      `${what} failed (exit ${result.status ?? result.signal})`,
      `${result.stdout ?? ''}${result.stderr ?? ''}`.trim().slice(-4000),
    );
  }
  return result.stdout;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/** A built app as a child process, its output in <runDir>/<name>.log. */
function startApp(name, script, extraEnv) {
  const logPath = path.join(settings.runDir, `${name}.log`);
  const log = createWriteStream(logPath);
  const child = spawn(process.execPath, [path.join(ROOT, script)], {
    cwd: ROOT,
    env: { ...env, ...extraEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  children.add(child);
  child.on('exit', (code, signal) => {
    children.delete(child);
    if (!shuttingDown) {
      console.error(
        `\n${red(`${name} exited unexpectedly`)} (${code ?? signal}); last lines of ${logPath}:`,
      );
      console.error(tail(logPath));
      void shutdown(1);
    }
  });
  return { child, logPath };
}

function tail(file, lines = 25) {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

// ------------------------------------------------------------------ services
const isLoopback = (host) =>
  ['127.0.0.1', 'localhost', '::1', '[::1]'].includes(host) || host.startsWith('127.');

async function checkPostgres(url) {
  const { Client } = require('pg');
  const client = new Client({ connectionString: url, connectionTimeoutMillis: 4000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
    return null;
  } catch (error) {
    return error instanceof Error ? error.message || String(error.code) : String(error);
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function checkRedis(url) {
  const { Redis } = require('ioredis');
  const redis = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: 4000,
  });
  let socketError = null;
  redis.on('error', (error) => (socketError ??= error));
  try {
    await redis.connect();
    return (await redis.ping()) === 'PONG' ? null : 'no PONG';
  } catch (error) {
    // ioredis reports "Connection is closed."; the socket's error says why (ECONNREFUSED, …).
    return (socketError ?? error)?.message ?? String(error);
  } finally {
    redis.disconnect();
  }
}

/** The first of `names` found on PATH or in `extraDirs`, or null. */
function findExecutable(names, extraDirs = []) {
  const dirs = [...(env.PATH ?? '').split(path.delimiter), ...extraDirs].filter(Boolean);
  for (const name of names) {
    for (const dir of dirs) {
      const candidate = path.join(dir, name);
      if (existsSync(candidate)) return candidate;
    }
  }
  return null;
}

/** Debian keeps initdb and pg_ctl out of PATH, in /usr/lib/postgresql/<version>/bin. */
function postgresBinDirs() {
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return [];
  return readdirSync(base)
    .sort((x, y) => Number(y) - Number(x))
    .map((version) => path.join(base, version, 'bin'));
}

/**
 * Starts Postgres and Redis from their installed binaries, as the current user, in data
 * directories under settings.servicesDir, on the loopback ports of the configured URLs (so a
 * second demo finds them again). Returns a hint on how to stop them, or null when a binary is
 * missing or a server fails to start.
 */
function startPrivateServers(pgUrl, redisUrl) {
  const initdb = findExecutable(['initdb'], postgresBinDirs());
  const pgCtl = findExecutable(['pg_ctl'], postgresBinDirs());
  const redisServer = findExecutable(['redis-server']);
  if (!initdb || !pgCtl || !redisServer) return null;
  const pgPort = pgUrl.port || '5432';
  const redisPort = redisUrl.port || '6379';
  const pgUser = decodeURIComponent(pgUrl.username) || 'postgres';
  const run = (command, args) =>
    spawnSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const lastLine = (result) => (result.stderr || result.stdout || '').trim().split('\n').pop();

  const pgData = path.join(settings.servicesDir, `postgres-${pgPort}`);
  mkdirSync(settings.servicesDir, { recursive: true });
  if (!existsSync(path.join(pgData, 'PG_VERSION'))) {
    say(`initialising a Postgres cluster in ${shown(pgData)}/ (user ${pgUser}, trust on loopback)`);
    const init = run(initdb, [
      '-D',
      pgData,
      '-U',
      pgUser,
      '-A',
      'trust',
      '--no-sync',
      '-E',
      'UTF8',
    ]);
    if (init.status !== 0) {
      say(red(`initdb failed: ${lastLine(init)}`));
      return null;
    }
  }
  if (run(pgCtl, ['-D', pgData, 'status']).status !== 0) {
    const start = run(pgCtl, [
      '-D',
      pgData,
      '-l',
      path.join(pgData, 'server.log'),
      '-w',
      '-o',
      `-p ${pgPort} -c listen_addresses=127.0.0.1 -k ${pgData}`,
      'start',
    ]);
    if (start.status !== 0) {
      say(red(`pg_ctl start failed: ${lastLine(start)} (log: ${shown(pgData)}/server.log)`));
      return null;
    }
  }
  const redisDir = path.join(settings.servicesDir, `redis-${redisPort}`);
  mkdirSync(redisDir, { recursive: true });
  const pidFile = path.join(redisDir, 'redis.pid');
  const redisAlive =
    existsSync(pidFile) && run('kill', ['-0', readFileSync(pidFile, 'utf8').trim()]).status === 0;
  if (!redisAlive) {
    const started = run(redisServer, [
      '--port',
      redisPort,
      '--bind',
      '127.0.0.1',
      '--dir',
      redisDir,
      '--daemonize',
      'yes',
      '--pidfile',
      pidFile,
      '--logfile',
      path.join(redisDir, 'redis.log'),
      '--save',
      '',
      '--appendonly',
      'no',
      '--maxmemory-policy',
      'noeviction',
    ]);
    if (started.status !== 0) {
      say(red(`redis-server failed to start: ${lastLine(started)}`));
      return null;
    }
  }
  return { stopHint: `${pgCtl} -D ${shown(pgData)} stop; kill $(cat ${shown(pidFile)})` };
}

async function ensureServices() {
  let pgError = await checkPostgres(settings.databaseUrl);
  let redisError = await checkRedis(settings.redisUrl);
  if (!pgError && !redisError) {
    say(`Postgres ${hostOf(settings.databaseUrl)} and Redis ${hostOf(settings.redisUrl)} answer`);
    return;
  }
  const pg = new URL(settings.databaseUrl);
  const redis = new URL(settings.redisUrl);
  const local = isLoopback(pg.hostname) && isLoopback(redis.hostname);
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (local && isRoot && existsSync('/usr/bin/apt-get')) {
    say(
      `${pgError ? 'Postgres' : 'Redis'} does not answer; starting (or installing) it with tools/scripts/ensure-services.sh`,
    );
    const result = spawnSync('bash', [path.join(ROOT, 'tools/scripts/ensure-services.sh')], {
      cwd: ROOT,
      stdio: ['ignore', 'inherit', 'inherit'],
      env: {
        ...env,
        LORAFLEET_PG_HOST: pg.hostname,
        LORAFLEET_PG_PORT: pg.port || '5432',
        LORAFLEET_REDIS_HOST: redis.hostname,
        LORAFLEET_REDIS_PORT: redis.port || '6379',
        LORAFLEET_TEST_DB: settings.database,
        LORAFLEET_SKIP_SYSTEM_PACKAGES: '1',
      },
    });
    if (result.status === 0) {
      pgError = await checkPostgres(settings.databaseUrl);
      redisError = await checkRedis(settings.redisUrl);
      if (!pgError && !redisError) return;
    }
  }
  // Not root (Postgres refuses to run as root): the servers' binaries may still be installed,
  // and any user may run them in data directories of their own, on the URLs' loopback ports.
  if (local && !isRoot) {
    const started = startPrivateServers(pg, redis);
    if (started) {
      // redis-server daemonizes before it listens: give both a few seconds.
      for (let attempt = 0; attempt < 20; attempt++) {
        pgError = await checkPostgres(settings.databaseUrl);
        redisError = await checkRedis(settings.redisUrl);
        if (!pgError && !redisError) break;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
      if (!pgError && !redisError) {
        say(
          `own Postgres ${hostOf(settings.databaseUrl)} and Redis ${hostOf(settings.redisUrl)} ` +
            `started from the installed binaries in ${shown(settings.servicesDir)}/; they keep ` +
            `running (stop: ${started.stopHint})`,
        );
        return;
      }
    }
  }
  const problems = [
    pgError && `  Postgres at ${redact(settings.databaseUrl)}: ${pgError}`,
    redisError && `  Redis at ${settings.redisUrl}: ${redisError}`,
  ]
    .filter(Boolean)
    .join('\n');
  fail(
    `the demo needs Postgres (13+) and Redis (6.2+), and these do not answer:\n${problems}`,
    [
      'Either install them, e.g. on Debian/Ubuntu as root:',
      '  apt-get install -y postgresql redis-server && bash tools/scripts/ensure-services.sh',
      '(ensure-services.sh starts both and lets user postgres log in over 127.0.0.1 without a password;',
      ' `npm run demo` runs it by itself when it is started as root; started as another user, it runs',
      ` the installed initdb/pg_ctl and redis-server itself, in ${shown(settings.servicesDir)}/)`,
      'or start them with Docker where a Docker engine runs:',
      '  docker run -d -p 127.0.0.1:5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:16',
      '  docker run -d -p 127.0.0.1:6379:6379 redis:7',
      'or point the demo at running servers:',
      '  DATABASE_URL=postgres://USER:PASSWORD@HOST:5432/postgres REDIS_URL=redis://HOST:6379 npm run demo',
      '(the Postgres user needs CREATEDB; the demo creates its own database, ' +
        settings.database +
        ')',
    ].join('\n'),
  );
}

const hostOf = (url) => {
  const u = new URL(url);
  return `${u.hostname}:${u.port || (u.protocol.startsWith('redis') ? 6379 : 5432)}`;
};
const redact = (url) => {
  const u = new URL(url);
  if (u.password) u.password = '***';
  return u.toString();
};

/** Drops and recreates the demo database; returns its URL. */
async function freshDatabase() {
  const { Client } = require('pg');
  const client = new Client({
    connectionString: settings.databaseUrl,
    connectionTimeoutMillis: 5000,
  });
  await client.connect();
  try {
    const name = settings.database;
    const version = Number(
      (await client.query('SHOW server_version_num')).rows[0].server_version_num,
    );
    if (version >= 130000) await client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
    else {
      await client.query(
        'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1',
        [name],
      );
      await client.query(`DROP DATABASE IF EXISTS "${name}"`);
    }
    await client.query(`CREATE DATABASE "${name}"`);
  } catch (error) {
    fail(
      `cannot (re)create database ${settings.database}: ${error instanceof Error ? error.message : error}`,
      'The Postgres user of DATABASE_URL needs the CREATEDB privilege.',
    );
  } finally {
    await client.end();
  }
  const url = new URL(settings.databaseUrl);
  url.pathname = `/${settings.database}`;
  return url.toString();
}

async function cleanupRedis() {
  if (!queuePrefix) return;
  const { Redis } = require('ioredis');
  const redis = new Redis(settings.redisUrl, {
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  redis.on('error', () => undefined);
  try {
    const keys = await redis.keys(`${queuePrefix}:*`);
    if (keys.length) await redis.del(...keys);
  } finally {
    redis.disconnect();
  }
}

// ------------------------------------------------------------------ evaluation (child processes)
/**
 * Runs tools/demo/evaluate.mjs in a child process (tfjs's wasm backend is single-threaded,
 * so on 2 cores the base-model evaluation runs beside the training worker at little cost).
 */
function startEvaluation(label, args, onProgress) {
  const outFile = path.join(settings.runDir, `eval-${label}.json`);
  const child = fork(path.join(ROOT, 'tools/demo/evaluate.mjs'), [...args, '--out', outFile], {
    cwd: ROOT,
    env: { ...env, LORAFLEET_LOG_LEVEL: 'error' },
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  });
  children.add(child);
  let stderr = '';
  child.stderr?.on('data', (chunk) => (stderr += chunk.toString()));
  child.on('message', (message) => {
    if (message && message.kind === 'progress') onProgress(message.done, message.total);
  });
  return new Promise((resolve, reject) => {
    child.on('exit', (code) => {
      children.delete(child);
      if (code === 0 && existsSync(outFile)) resolve(JSON.parse(readFileSync(outFile, 'utf8')));
      else if (!shuttingDown)
        reject(new Error(`${label} evaluation exited with ${code}: ${stderr.slice(-2000)}`));
    });
  });
}

/** Prints rows as left-aligned columns two spaces apart, indented by two. */
function printTable(rows) {
  const widths = rows[0].map((_, k) => Math.max(...rows.map((r) => r[k].length)));
  for (const row of rows) {
    console.log(`  ${row.map((cell, k) => cell.padEnd(widths[k])).join('  ')}`.trimEnd());
  }
}

// ------------------------------------------------------------------ main
async function main() {
  console.log(bold(`lorafleet demo: fine-tune a LoRA adapter over the REST API for ${task.title}`));
  const modelDir = path.join(settings.modelsDir, settings.model);
  if (!existsSync(path.join(modelDir, 'config.json'))) {
    fail(
      `base model ${settings.model} not found in ${settings.modelsDir}`,
      'Set LORAFLEET_DEMO_MODEL / LORAFLEET_MODELS_DIR, or restore models/ from git.',
    );
  }
  for (const split of ['train.jsonl', 'valid.jsonl', 'test.jsonl', 'fewshot.json']) {
    if (!existsSync(path.join(settings.dataDir, split)))
      fail(`missing ${path.join(settings.dataDir, split)}`);
  }
  rmSync(settings.runDir, { recursive: true, force: true });
  mkdirSync(settings.runDir, { recursive: true });

  /** Seconds since start at each milestone, for results.json. */
  const marks = {};
  const mark = (name) => (marks[name] = Math.round((Date.now() - started) / 100) / 10);

  // 1. build
  if (settings.skipBuild) {
    say('build skipped (LORAFLEET_DEMO_SKIP_BUILD=1)');
  } else {
    phase('building api, worker, cli and dashboard (cached after the first run)');
    const buildStart = Date.now();
    runQuiet(
      'npx nx run-many -t build',
      'npx',
      ['nx', 'run-many', '-t', 'build', '--projects=api,worker,cli', '--output-style=static'],
      { NX_DAEMON: 'false' },
    );
    const dash = spawnSync('npx', ['nx', 'run', 'dashboard:build', '--output-style=static'], {
      cwd: ROOT,
      env: { ...env, NX_DAEMON: 'false' },
      encoding: 'utf8',
    });
    if (dash.status !== 0)
      say(
        'dashboard build failed; the API still works, the dashboard page will say it is not built',
      );
    say(`built in ${((Date.now() - buildStart) / 1000).toFixed(0)} s`);
    mark('built');
  }
  const { RemoteClient } = require(path.join(ROOT, 'apps/cli/dist/remote/client.js'));
  const { watchJob, ProgressPrinter } = require(path.join(ROOT, 'apps/cli/dist/remote/watch.js'));
  const { downloadAdapter } = require(
    path.join(ROOT, 'apps/cli/dist/commands/remote-adapters.command.js'),
  );

  // 2. services, database, tenant
  phase('Postgres and Redis');
  await ensureServices();
  const databaseUrl = await freshDatabase();
  say(`fresh database ${settings.database}`);
  const cli = path.join(ROOT, 'apps/cli/bin/lorafleet.js');
  runQuiet('lorafleet admin db migrate', process.execPath, [cli, 'admin', 'db', 'migrate'], {
    DATABASE_URL: databaseUrl,
  });
  const tenant = JSON.parse(
    runQuiet(
      'lorafleet admin db create-tenant',
      process.execPath,
      [cli, 'admin', 'db', 'create-tenant', 'demo', '--json'],
      { DATABASE_URL: databaseUrl },
    ).trim(),
  );
  say(`migrated; tenant ${tenant.tenant_id} with API key ${tenant.api_key.slice(0, 8)}…`);

  // 3. api + worker
  phase('starting the api and one worker');
  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;
  queuePrefix = `lf-demo-${randomBytes(4).toString('hex')}`;
  const common = {
    DATABASE_URL: databaseUrl,
    REDIS_URL: settings.redisUrl,
    LORAFLEET_MODELS_DIR: settings.modelsDir,
    LORAFLEET_QUEUE_PREFIX: queuePrefix,
    LORAFLEET_LOG_LEVEL: 'log',
  };
  startApp('api', 'apps/api/dist/main.js', {
    ...common,
    PORT: String(port),
    HOST: '127.0.0.1',
    LORAFLEET_OUTBOX_POLL_MS: '250',
  });
  startApp('worker', 'apps/worker/dist/main.js', {
    ...common,
    LORAFLEET_BACKEND: settings.backend,
    LORAFLEET_WORKER_ID: 'demo-worker',
  });
  const readyBy = Date.now() + 90_000;
  for (;;) {
    const ok = await fetch(`${baseUrl}/readyz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (Date.now() > readyBy)
      fail(
        `the api did not become ready at ${baseUrl}/readyz`,
        tail(path.join(settings.runDir, 'api.log')),
      );
    await new Promise((r) => setTimeout(r, 250));
  }
  writeFileSync(
    path.join(settings.runDir, 'demo.env'),
    [
      `# Recreate the demo's api against its database: set -a; . ${shown(settings.runDir)}/demo.env; set +a; npm run start:api`,
      `DATABASE_URL=${databaseUrl}`,
      `REDIS_URL=${settings.redisUrl}`,
      `LORAFLEET_MODELS_DIR=${settings.modelsDir}`,
      `LORAFLEET_QUEUE_PREFIX=${queuePrefix}`,
      `LORAFLEET_API_URL=${baseUrl}`,
      `LORAFLEET_API_KEY=${tenant.api_key}`,
      '',
    ].join('\n'),
  );
  say(`api ready at ${baseUrl} (logs in ${shown(settings.runDir)}/)`);

  // 4. upload + job
  phase(`uploading ${shown(settings.dataDir)} over REST and creating the job`);
  const client = new RemoteClient({ baseUrl, apiKey: tenant.api_key });
  const trainLines = readFileSync(path.join(settings.dataDir, 'train.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean);
  const usedTrain = settings.trainLimit ? trainLines.slice(0, settings.trainLimit) : trainLines;
  const upload = async (name, content) => {
    const file = await client.upload(
      '/v1/files',
      { name, content: Buffer.from(content) },
      { purpose: 'fine-tune' },
    );
    if (file.status !== 'processed') fail(`${name} was rejected: ${file.status_details}`);
    return file;
  };
  const trainFile = await upload(`${task.name}-train.jsonl`, `${usedTrain.join('\n')}\n`);
  const validFile = await upload(
    `${task.name}-valid.jsonl`,
    readFileSync(path.join(settings.dataDir, 'valid.jsonl')),
  );
  say(`uploaded ${trainFile.id} (${usedTrain.length} examples) and ${validFile.id}`);
  const stepsPerEpoch = Math.ceil(usedTrain.length / settings.batchSize);
  const body = {
    model: settings.model,
    training_file: trainFile.id,
    validation_file: validFile.id,
    suffix: task.name,
    seed: 7,
    metadata: { demo: task.name },
    hyperparameters: {
      n_epochs: Math.min(50, Math.ceil(settings.steps / stepsPerEpoch)),
      batch_size: settings.batchSize,
    },
    lora: {
      r: settings.rank,
      alpha: 2 * settings.rank,
      dropout: 0.05,
      target_modules: settings.targets,
    },
    training: {
      learning_rate: settings.learningRate,
      lr_scheduler: 'cosine',
      warmup_steps: Math.min(20, Math.floor(settings.steps / 10)),
      max_steps: settings.steps,
      max_seq_length: task.training.maxSeqLength,
    },
  };
  mark('services_api_ready');
  const job = await client.json('POST', '/v1/fine_tuning/jobs', { body });
  mark('job_created');
  say(
    `job ${job.id}: LoRA r=${settings.rank} α=${2 * settings.rank} on ${settings.targets.join(',')}, ` +
      `${settings.steps} steps of ${settings.batchSize}, lr ${settings.learningRate} (cosine)`,
  );

  // 5. the base model's 5-shot baseline runs beside training (the trainer uses one core)
  const testRows = readFileSync(path.join(settings.dataDir, 'test.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean).length;
  const nTest = settings.testLimit ? Math.min(settings.testLimit, testRows) : testRows;
  const evalArgs = [
    '--task',
    task.name,
    '--model-dir',
    modelDir,
    '--data',
    path.join(settings.dataDir, 'test.jsonl'),
    '--backend',
    settings.backend === 'auto' ? 'auto' : settings.backend,
    ...(settings.testLimit ? ['--limit', String(settings.testLimit)] : []),
  ];
  const evalProgress = { base: 0, adapter: 0 };
  const baseEval = startEvaluation(
    'base-5shot',
    [...evalArgs, '--fewshot', path.join(settings.dataDir, 'fewshot.json')],
    (done) => (evalProgress.base = done),
  );
  baseEval.catch(() => undefined);

  // 6. watch
  phase(`training (progress every few seconds; dashboard: ${baseUrl}/jobs/${job.id})`);
  const printer = new ProgressPrinter(process.stdout, 5000);
  const finished = await watchJob(client, job.id, {
    intervalMs: 1000,
    onUpdate: (state) => printer.update(state),
    onEvent: (event) => printer.event(event),
  });
  printer.breakLine();
  if (finished.status !== 'succeeded') {
    fail(
      `job ${job.id} ${finished.status}: ${finished.error?.message ?? 'no error message'}`,
      `worker log:\n${tail(path.join(settings.runDir, 'worker.log'))}`,
    );
  }
  const trainSeconds = (finished.finished_at ?? Date.now() / 1000) - finished.created_at;
  say(
    `${green('succeeded')}: ${finished.fine_tuned_model} (${finished.trained_tokens ?? '?'} trained tokens, ~${trainSeconds} s, backend ${finished.backend ?? '?'})`,
  );

  // 7. download
  const adapterDir = path.join(settings.runDir, 'adapter');
  mark('job_succeeded');
  const { adapter } = await downloadAdapter(client, finished.adapter_id, adapterDir);
  mark('adapter_downloaded');
  say(`downloaded PEFT adapter ${adapter.id} to ${shown(adapterDir)}/ (sha256 verified)`);

  // 8. evaluate the adapter; wait for the baseline
  phase(
    `evaluating on the held-out test split (${nTest} ${task.unit}${settings.testLimit ? `, first ${nTest} of ${testRows}` : ''})`,
  );
  // Training is over, so both cores are free: the adapter's evaluation runs as two shards.
  const shardDone = [0, 0];
  const adapterEval = Promise.all(
    [0, 1].map((k) =>
      startEvaluation(
        `adapter-0shot.${k}`,
        [...evalArgs, '--adapter', adapterDir, '--shard', `${k}/2`],
        (done) => {
          shardDone[k] = done;
          evalProgress.adapter = shardDone[0] + shardDone[1];
        },
      ),
    ),
  ).then((parts) => {
    const merged = mergeResults(parts);
    writeFileSync(
      path.join(settings.runDir, 'eval-adapter-0shot.json'),
      `${JSON.stringify(merged, null, 2)}\n`,
    );
    for (const k of [0, 1]) rmSync(path.join(settings.runDir, `eval-adapter-0shot.${k}.json`));
    return merged;
  });
  const ticker = setInterval(
    () =>
      say(
        `  base 5-shot ${evalProgress.base}/${nTest}   adapter 0-shot ${evalProgress.adapter}/${nTest}`,
      ),
    10_000,
  );
  let base;
  let tuned;
  try {
    [base, tuned] = await Promise.all([baseEval, adapterEval]);
  } finally {
    clearInterval(ticker);
  }

  // 9. report
  mark('evaluated');
  const wall = Math.round((Date.now() - started) / 1000);
  /** The table's metrics (and the chance level, where the task has one) of one evaluation. */
  const figures = (r) =>
    Object.fromEntries(
      [...task.columns.map((c) => c.key), 'exact_match', 'chance'].map((k) => [k, r[k]]),
    );
  const results = {
    task: task.name,
    model: settings.model,
    job_id: job.id,
    adapter_id: adapter.id,
    fine_tuned_model: finished.fine_tuned_model,
    steps: settings.steps,
    batch_size: settings.batchSize,
    learning_rate: settings.learningRate,
    train_examples: usedTrain.length,
    test_examples: nTest,
    headline_metric: task.headline.label,
    // The figures are exact for one backend (seeded, counter-based randomness), but each
    // backend rounds differently, and LORAFLEET_BACKEND=auto picks by what is installed
    // (wasm-blas needs libopenblas0-pthread): docs/demo.md, "What varies".
    backend: {
      requested: settings.backend,
      training: finished.backend ?? null,
      base_5shot_eval: base.backend,
      adapter_0shot_eval: tuned.backend,
    },
    lora: { r: settings.rank, alpha: 2 * settings.rank, target_modules: settings.targets },
    base_5shot: figures(base),
    adapter_0shot: figures(tuned),
    wall_seconds: wall,
    milestones_s: marks,
    eval_seconds: {
      base_5shot: { load: base.load_seconds, decode: base.decode_seconds },
      adapter_0shot: { load: tuned.load_seconds, decode: tuned.decode_seconds },
    },
  };
  writeFileSync(
    path.join(settings.runDir, 'results.json'),
    `${JSON.stringify(results, null, 2)}\n`,
  );
  console.log('');
  console.log(
    bold(
      `Held-out ${task.name} test split, ${nTest} ${task.unit} never seen in training (greedy decoding):`,
    ),
  );
  // Same seed, same backend: the same figures to the last digit. Another backend rounds
  // differently and lands elsewhere (docs/demo.md, "What varies"), so say which one ran.
  console.log(
    dim(
      `  trained on ${finished.backend ?? '?'}, evaluated on ${base.backend}` +
        (settings.backend === 'auto' ? ' (LORAFLEET_BACKEND=auto)' : ''),
    ),
  );
  printTable([
    ['model', ...task.columns.map((c) => c.label)],
    [`base ${settings.model}, 5-shot prompt`, ...task.columns.map((c) => pct(base[c.key]))],
    ['base + LoRA adapter, 0-shot', ...task.columns.map((c) => pct(tuned[c.key]))],
  ]);
  console.log('');
  const verdict = task.verdict(base, tuned);
  console.log(verdict.beaten ? `  ${verdict.text}` : red(`  ${verdict.text}`));
  console.log('');
  // The first test rows, side by side (not picked: the same rows every run).
  const clip = (text, n) => {
    const flat = text.replace(/\s+/g, ' ');
    return flat.length > n ? `${flat.slice(0, n - 1)}…` : flat;
  };
  printTable([
    ['test input', 'reference', 'base 5-shot', 'adapter'],
    ...tuned.examples
      .slice(0, 6)
      .map((ex, i) => [
        clip(task.shortInput(ex.prompt), 44),
        ex.reference,
        clip(base.examples[i].prediction, 18),
        `${ex.prediction} ${ex.prediction === ex.reference ? '✓' : '✗'}`,
      ]),
  ]);
  console.log('');
  console.log(
    `Everything is kept for inspection in ${shown(settings.runDir)}/: adapter/ (PEFT), results.json, eval-*.json, api.log, worker.log, demo.env.`,
  );
  console.log(`Database ${settings.database} holds the tenant, files, job, events and adapter.`);
  if (settings.keep) {
    console.log(
      `Dashboard: ${baseUrl}/jobs/${job.id} (sign in with the key in ${shown(settings.runDir)}/demo.env). Ctrl-C stops the api and worker.`,
    );
  } else {
    console.log(
      `Dashboard: ${baseUrl}/jobs/${job.id} while running; \`npm run demo -- --keep\` keeps it up, or: set -a; . ${shown(settings.runDir)}/demo.env; set +a; npm run start:api`,
    );
  }
  console.log(
    `DEMO metric=${task.headline.label} base=${base[task.headline.key].toFixed(3)} adapter=${tuned[task.headline.key].toFixed(3)} wall_s=${wall}`,
  );
  if (settings.keep) return; // the api and worker keep the event loop alive until Ctrl-C
  await shutdown(0);
}

main().catch((error) => {
  if (error instanceof DemoExit) return;
  console.error(
    `\n${red('demo failed:')} ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`,
  );
  void shutdown(1);
});
