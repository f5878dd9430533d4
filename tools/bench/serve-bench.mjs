#!/usr/bin/env node
// Serving benchmarks (issue 19, ADR 0006), `npm run bench:serve`. Needs the built apps and libs
// (`npx nx run-many -t build`) and redis-server on PATH (the benchmark starts a private one, so
// its command and CPU counts are its own). Greedy decoding on lorafleet-tiny-llama, on the cpu
// backend unless --backend names another (both sides use it).
// Sections:
// 1. Transport overhead: one streamed completion at a time through the built api and one
//    serve-only worker (Redis Streams both ways), against lora-core's CompletionEngine
//    generating in this process on the same model and prompt: time to first token, tokens/s.
// 2. Heterogeneous batching: aggregate tokens/s at a fixed number of concurrent requests (16)
//    spread over 1, 4 and 16 distinct adapters of the base, through the API and in process
//    (so the transport's share and the batching's share are separable), with time to first
//    token, peak RSS of the decoding process, and Redis commands and CPU per generated token.
// 3. The transport alone, no model: Redis Streams against BullMQ (serve-transport.mjs).
// A fixed number of tokens: stop tokens are disabled in process; through the API the prompt
// is chosen so that the model does not stop early, and tokens are counted from usage.
//   npm run bench:serve [-- --smoke] [-- --requests N] [-- --tokens N] [-- --concurrency N]
//                       [-- --rounds N] [-- --batch-tokens N] [-- --backend NAME] [-- --json]
// A benchmark prints figures; it asserts nothing about speed.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import {
  childPids,
  peakRssMb,
  percentile,
  processCpuMs,
  resetPeakRss,
  sleep,
} from './bench-helpers.mjs';
import { makeBenchAdapters, storeBenchAdapters } from './serve-adapters.mjs';
import { transportBaseline } from './serve-transport.mjs';

const require = createRequire(import.meta.url);
const root = path.resolve(import.meta.dirname, '../..');
const db = require(path.join(root, 'libs/db/dist/index.js'));
const data = require(path.join(root, 'libs/data/dist/index.js'));
const contracts = require(path.join(root, 'libs/contracts/dist/index.js'));
const core = require(path.join(root, 'libs/lora-core/dist/index.js'));
const tf = require('@tensorflow/tfjs');
// Scratch databases, free ports and a private Redis come from the built test harness library.
const { PrivateRedis, createScratchDatabase, freePort } = require(
  path.join(root, 'libs/testing/dist/index.js'),
);

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const at = args.indexOf(name);
  return at >= 0 ? Number(args[at + 1]) : fallback;
};
// --smoke: a tiny budget that only proves the benchmark still runs.
const smoke = args.includes('--smoke');
const requests = option('--requests', smoke ? 2 : 20);
const tokens = option('--tokens', smoke ? 4 : 32);
// Smoke mode keeps the concurrent section small: 4 requests over 1 and 4 adapters.
const concurrency = option('--concurrency', smoke ? 4 : 16);
const rounds = option('--rounds', smoke ? 1 : 3);
const batchTokens = option('--batch-tokens', smoke ? 4 : 32);
const json = args.includes('--json');
const backendAt = args.indexOf('--backend');
/** The tfjs backend of both sides (the worker's LORAFLEET_BACKEND); cpu as the first figures. */
const BACKEND = backendAt >= 0 ? args[backendAt + 1] : 'cpu';
const MODEL = 'lorafleet-tiny-llama';
const MODEL_DIR = path.join(root, 'models', MODEL);
const PROMPT = 'It was the best of times, it was the';
/**
 * Distinct adapters the concurrent requests are spread over (request i uses adapter i mod k);
 * no more than there are requests.
 */
const ADAPTER_COUNTS = [1, 4, 16].filter((count) => count <= concurrency);

const summary = (values) => ({ p50: percentile(values, 50), p99: percentile(values, 99) });
const median = (values) => percentile(values, 50);

/** One measured round of `concurrency` requests: aggregate tokens/s and each first token. */
function roundFigures(started, outcomes) {
  const ended = Math.max(...outcomes.map((o) => o.ended));
  const completionTokens = outcomes.reduce((n, o) => n + o.completionTokens, 0);
  return {
    tokensPerSecond: completionTokens / ((ended - started) / 1000),
    completionTokens,
    ttftMs: outcomes.map((o) => o.first - started),
  };
}

/** Folds a count's rounds into its report line. */
function countFigures(adapters, measured, extra) {
  return {
    adapters,
    tokensPerSecond: median(measured.map((r) => r.tokensPerSecond)),
    roundsTokensPerSecond: measured.map((r) => r.tokensPerSecond),
    completionTokens: measured.reduce((n, r) => n + r.completionTokens, 0),
    ttftMs: summary(measured.flatMap((r) => r.ttftMs)),
    ...extra,
  };
}

/**
 * Runs `rounds` rounds of every adapter count, interleaved (1, 4, 16, 1, 4, 16, …) so that a
 * change in the shared machine's load falls on every count alike. Around each round it samples
 * `counters()` (numbers, or null where unknown; summed per count) and, after `resetPeaks()`,
 * `peaks()` (peak RSS figures; the largest per count).
 */
async function interleavedRounds(runRound, { counters, resetPeaks, peaks }) {
  const perCount = new Map(
    ADAPTER_COUNTS.map((count) => [count, { measured: [], sums: {}, peaks: {} }]),
  );
  for (let r = 0; r < rounds; r++) {
    for (const count of ADAPTER_COUNTS) {
      const entry = perCount.get(count);
      resetPeaks();
      const before = await counters();
      entry.measured.push(await runRound(count, r));
      const after = await counters();
      for (const [name, value] of Object.entries(after)) {
        const known = value !== null && before[name] !== null && entry.sums[name] !== null;
        entry.sums[name] = known ? (entry.sums[name] ?? 0) + value - before[name] : null;
      }
      for (const [name, value] of Object.entries(peaks())) {
        entry.peaks[name] = value === null ? null : Math.max(entry.peaks[name] ?? 0, value);
      }
    }
  }
  return ADAPTER_COUNTS.map((count) => {
    const { measured, sums, peaks: peak } = perCount.get(count);
    const generated = measured.reduce((n, r) => n + r.completionTokens, 0);
    const perToken = (name, scale = 1) =>
      sums[name] === null ? null : (sums[name] * scale) / generated;
    return { count, measured, peak, perToken };
  });
}

async function inProcess(model, tokenizer) {
  const engine = new core.CompletionEngine(model, { tokenizer });
  const promptIds = data.encodeTextPrompt(PROMPT, tokenizer);
  const ttft = [];
  const rates = [];
  for (let i = 0; i <= requests; i += 1) {
    const started = performance.now();
    let first;
    const done = engine.submit(
      {
        id: `r${i}`,
        promptIds,
        adapterId: null,
        maxTokens: tokens,
        temperature: 0,
        stopTokenIds: [],
      },
      () => (first ??= performance.now()),
    );
    await engine.runUntilIdle();
    const result = await done;
    const ended = performance.now();
    if (i === 0) continue; // warm-up
    ttft.push(first - started);
    rates.push(result.usage.completionTokens / ((ended - started) / 1000));
  }
  engine.dispose();
  return { ttftMs: summary(ttft), tokensPerSecond: summary(rates) };
}

/**
 * Section 2 in this process: `concurrency` requests submitted at once to one CompletionEngine
 * (batch size `concurrency`), spread over 1, 4 and 16 adapters held by its registry.
 */
async function inProcessBatched(model, tokenizer, adapters, baseSha256) {
  const registry = new core.AdapterRegistry(model, {
    maxBytes: 1 << 30,
    baseModelSha256: baseSha256,
  });
  for (const adapter of adapters) {
    registry.register(adapter.name, {
      adapterConfig: adapter.adapterConfig,
      safetensors: adapter.safetensors,
      baseModelSha256: baseSha256,
    });
  }
  const engine = new core.CompletionEngine(model, {
    tokenizer,
    registry,
    maxBatchSize: concurrency,
  });
  const promptIds = data.encodeTextPrompt(PROMPT, tokenizer);
  const round = async (count, label) => {
    const started = performance.now();
    const pending = Array.from({ length: concurrency }, (_, i) => {
      const outcome = {};
      const done = engine.submit(
        {
          id: `${label}-${i}`,
          promptIds,
          adapterId: adapters[i % count].name,
          maxTokens: batchTokens,
          temperature: 0,
          stopTokenIds: [],
        },
        () => (outcome.first ??= performance.now()),
      );
      return done.then((result) => {
        outcome.ended = performance.now();
        outcome.completionTokens = result.usage.completionTokens;
        return outcome;
      });
    });
    await engine.runUntilIdle();
    return roundFigures(started, await Promise.all(pending));
  };
  try {
    await round(adapters.length, 'warm-up');
    // CPU time as well as wall time: it moves less with the other sessions' load.
    const cpuMs = () => {
      const { user, system } = process.cpuUsage();
      return (user + system) / 1000;
    };
    const counts = await interleavedRounds((count, r) => round(count, `k${count}-r${r}`), {
      counters: async () => ({ cpuMs: cpuMs() }),
      resetPeaks: () => resetPeakRss(process.pid),
      peaks: () => ({ rss: peakRssMb(process.pid) }),
    });
    return counts.map(({ count, measured, peak, perToken }) =>
      countFigures(count, measured, { peakRssMb: peak.rss, cpuMsPerToken: perToken('cpuMs') }),
    );
  } finally {
    engine.dispose();
    registry.dispose();
  }
}

/** One streamed `/v1/completions` request; times from `started`, tokens from usage. */
async function streamCompletion(base, key, model, maxTokens) {
  const response = await fetch(`${base}/v1/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      model,
      prompt: PROMPT,
      max_tokens: maxTokens,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  if (!response.ok) throw new Error(`HTTP ${response.status}: ${await response.text()}`);
  let first;
  let text = '';
  const decoder = new TextDecoder();
  for await (const bytes of response.body) {
    first ??= performance.now();
    text += decoder.decode(bytes, { stream: true });
  }
  const ended = performance.now();
  const chunks = text
    .split('\n\n')
    .map((event) => event.replace(/^data: /, ''))
    .filter((event) => event.startsWith('{'))
    .map((event) => JSON.parse(event));
  const failed = chunks.find((chunk) => chunk.error);
  if (failed) throw new Error(`stream error: ${JSON.stringify(failed.error)}`);
  const usage = chunks.find((chunk) => chunk.usage)?.usage;
  if (!usage) throw new Error(`stream ended without a usage chunk: ${text.slice(-500)}`);
  return { first, ended, completionTokens: usage.completion_tokens };
}

/** Redis's own counters: commands processed and CPU seconds (user + sys). */
async function redisCounters(redis) {
  const info = await redis.info();
  const field = (name) => Number(info.match(new RegExp(`^${name}:([\\d.]+)`, 'm'))[1]);
  return {
    commands: field('total_commands_processed'),
    cpuSeconds: field('used_cpu_user') + field('used_cpu_sys'),
  };
}

async function throughApi(adapters, baseSha256) {
  const redisServer = new PrivateRedis(await freePort());
  await redisServer.start();
  const redisUrl = redisServer.url;
  const { Redis } = require('ioredis');
  const redis = new Redis(redisUrl);
  const scratch = await createScratchDatabase('lorafleet_bench');
  const ds = db.createDataSource({ url: scratch.url });
  await ds.initialize();
  await db.runMigrations(ds);
  const tenants = new db.TenantsRepository(ds);
  const tenant = await tenants.createTenant('bench');
  const key = (await new db.ApiKeysRepository(ds).issue(tenant.id)).plaintext;
  const fineTuned = await storeBenchAdapters({
    db,
    data,
    contracts,
    ds,
    tenantId: tenant.id,
    baseName: MODEL,
    baseSha256,
    adapters,
  });
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const prefix = `lf-bench-${randomBytes(4).toString('hex')}`;
  const shared = {
    DATABASE_URL: scratch.url,
    REDIS_URL: redisUrl,
    LORAFLEET_MODELS_DIR: path.join(root, 'models'),
    LORAFLEET_QUEUE_PREFIX: prefix,
    LORAFLEET_LOG_LEVEL: 'error',
  };
  const start = (app, env) =>
    spawn(process.execPath, [path.join(root, `apps/${app}/dist/main.js`)], {
      cwd: root,
      env: { ...process.env, ...shared, ...env },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
  const worker = start('worker', {
    LORAFLEET_BACKEND: BACKEND,
    LORAFLEET_WORKER_ROLES: 'serve',
    LORAFLEET_SERVE_MAX_BATCH: String(concurrency),
  });
  const processes = [start('api', { PORT: String(port), HOST: '127.0.0.1' }), worker];
  try {
    for (;;) {
      const ready = await fetch(`${base}/readyz`).catch(() => undefined);
      if (ready?.ok) break;
      await sleep(100);
    }
    // Section 1: one request at a time on the base model.
    const ttft = [];
    const rates = [];
    for (let i = 0; i <= requests; i += 1) {
      const started = performance.now();
      const outcome = await streamCompletion(base, key, MODEL, tokens);
      if (i === 0) continue; // warm-up: the worker loads the base model on this one
      ttft.push(outcome.first - started);
      rates.push(outcome.completionTokens / ((outcome.ended - started) / 1000));
      if (outcome.completionTokens < tokens) {
        console.error(`note: request ${i} stopped after ${outcome.completionTokens} tokens`);
      }
    }
    const sequential = { ttftMs: summary(ttft), tokensPerSecond: summary(rates) };

    // Section 2: `concurrency` requests at once over 1, 4 and 16 adapters.
    const round = async (count) => {
      const started = performance.now();
      const outcomes = await Promise.all(
        Array.from({ length: concurrency }, (_, i) =>
          streamCompletion(base, key, fineTuned[i % count], batchTokens),
        ),
      );
      return roundFigures(started, outcomes);
    };
    // Warm-up: every adapter is fetched from Postgres into the worker's registry once.
    await round(fineTuned.length);
    const servingChild = childPids(worker.pid)[0];
    const counts = await interleavedRounds(round, {
      counters: async () => ({
        ...(await redisCounters(redis)),
        childCpuMs: servingChild ? processCpuMs(servingChild) : null,
      }),
      resetPeaks: () => {
        for (const pid of [servingChild, worker.pid]) if (pid) resetPeakRss(pid);
      },
      peaks: () => ({
        child: servingChild ? peakRssMb(servingChild) : null,
        worker: peakRssMb(worker.pid),
      }),
    });
    const batched = counts.map(({ count, measured, peak, perToken }) =>
      countFigures(count, measured, {
        servingChildPeakRssMb: peak.child,
        workerPeakRssMb: peak.worker,
        servingChildCpuMsPerToken: perToken('childCpuMs'),
        redisCommandsPerToken: perToken('commands'),
        redisCpuMsPerToken: perToken('cpuSeconds', 1000),
      }),
    );
    return { sequential, batched };
  } finally {
    for (const child of processes) child.kill('SIGTERM');
    await Promise.all(
      processes.map((child) =>
        child.exitCode === null && child.signalCode === null
          ? new Promise((resolve) => child.once('exit', resolve))
          : undefined,
      ),
    );
    redis.disconnect();
    await ds.destroy();
    await scratch.drop();
    await redisServer.stop();
  }
}

const loadAtStart = loadavg()[0];
await core.selectBackend(BACKEND);
const model = await core.loadCausalLM(MODEL_DIR);
const tokenizer = await data.loadTokenizer(MODEL_DIR);
// The serving worker checks an adapter's lineage against the hash of the weights it loaded.
const baseSha256 = model.baseModelSha256;
const adapters = makeBenchAdapters(core, tf, model, MODEL, Math.max(...ADAPTER_COUNTS));
const local = await inProcess(model, tokenizer);
const localBatched = await inProcessBatched(model, tokenizer, adapters, baseSha256);
model.dispose();
const served = await throughApi(adapters, baseSha256);
// Section 3 on a fresh private Redis: nothing else runs on it.
const transportRedis = new PrivateRedis(await freePort());
await transportRedis.start();
let transport;
try {
  transport = await transportBaseline(require, transportRedis.url, smoke ? 3 : 50, tokens);
} finally {
  await transportRedis.stop();
}

const ratio = (rows, count) =>
  rows.find((r) => r.adapters === count).tokensPerSecond /
  rows.find((r) => r.adapters === 1).tokensPerSecond;
const cpuRatio = (rows, field, count) => {
  const one = rows.find((r) => r.adapters === 1)[field];
  const many = rows.find((r) => r.adapters === count)[field];
  return one === null || many === null ? null : one / many;
};
const most = Math.max(...ADAPTER_COUNTS);
const result = {
  model: MODEL,
  backend: BACKEND,
  requests,
  tokens,
  loadAverage: loadAtStart,
  loadAverageAtEnd: loadavg()[0],
  inProcess: local,
  throughApi: served.sequential,
  ttftOverheadMsP50: served.sequential.ttftMs.p50 - local.ttftMs.p50,
  tokensPerSecondRatioP50: served.sequential.tokensPerSecond.p50 / local.tokensPerSecond.p50,
  heterogeneous: {
    concurrency,
    tokens: batchTokens,
    rounds,
    lora: { r: 8, alpha: 16, targetModules: 'all-linear' },
    inProcess: localBatched,
    throughApi: served.batched,
    ratioMostToOneAdapter: {
      adapters: most,
      inProcess: ratio(localBatched, most),
      throughApi: ratio(served.batched, most),
      target: 0.7,
    },
    // The same ratio from CPU time per token (1-adapter CPU ms over most-adapter CPU ms): what
    // the decoding costs, without the other sessions' share of the machine.
    cpuRatioMostToOneAdapter: {
      inProcess: cpuRatio(localBatched, 'cpuMsPerToken', most),
      servingChild: cpuRatio(served.batched, 'servingChildCpuMsPerToken', most),
    },
  },
  transport,
};
if (json) console.log(JSON.stringify(result, null, 2));
else {
  const f = (n) => (n === null || n === undefined ? '?' : n.toFixed(1));
  console.log(
    `serving, ${MODEL}, ${BACKEND} (load ${f(result.loadAverage)} at start, ${f(result.loadAverageAtEnd)} at end)`,
  );
  console.log(`1. ${requests} sequential streamed requests of ${tokens} tokens`);
  console.log(
    `  in-process   first token p50 ${f(local.ttftMs.p50)} ms p99 ${f(local.ttftMs.p99)} ms; ${f(local.tokensPerSecond.p50)} tokens/s p50`,
  );
  console.log(
    `  through API  first token p50 ${f(served.sequential.ttftMs.p50)} ms p99 ${f(served.sequential.ttftMs.p99)} ms; ${f(served.sequential.tokensPerSecond.p50)} tokens/s p50`,
  );
  console.log(
    `  overhead     first token +${f(result.ttftOverheadMsP50)} ms p50; tokens/s ×${result.tokensPerSecondRatioP50.toFixed(2)}`,
  );
  console.log(
    `2. ${concurrency} concurrent requests of ${batchTokens} tokens over ${ADAPTER_COUNTS.join('/')} adapters (r=8, all-linear), ${rounds} round(s) each, median aggregate tokens/s`,
  );
  for (const [label, rows] of [
    ['in-process ', localBatched],
    ['through API', served.batched],
  ]) {
    for (const row of rows) {
      const memory =
        row.peakRssMb !== undefined
          ? `peak RSS ${row.peakRssMb} MiB; ${row.cpuMsPerToken.toFixed(2)} CPU ms per token`
          : `serving child peak RSS ${row.servingChildPeakRssMb} MiB, worker ${row.workerPeakRssMb} MiB; serving child ${f(row.servingChildCpuMsPerToken)} CPU ms per token; Redis ${f(row.redisCommandsPerToken)} commands, ${row.redisCpuMsPerToken.toFixed(3)} CPU ms per token`;
      console.log(
        `  ${label} ${String(row.adapters).padStart(2)} adapter(s): ${f(row.tokensPerSecond)} tokens/s; first token p50 ${f(row.ttftMs.p50)} ms p99 ${f(row.ttftMs.p99)} ms; ${memory}`,
      );
    }
  }
  const r = result.heterogeneous.ratioMostToOneAdapter;
  console.log(
    `  ${most} adapters / 1 adapter: in-process ×${r.inProcess.toFixed(2)}, through API ×${r.throughApi.toFixed(2)} (target ≥ ${r.target})`,
  );
  const c = result.heterogeneous.cpuRatioMostToOneAdapter;
  console.log(
    `  the same from CPU time per token: in-process ×${c.inProcess?.toFixed(2) ?? '?'}, serving child ×${c.servingChild?.toFixed(2) ?? '?'}`,
  );
  console.log(
    `3. transport alone, ${transport.requests} sequential requests of ${transport.tokens} tokens, no model`,
  );
  for (const [label, t] of [
    ['Redis Streams', transport.redisStreams],
    ['BullMQ       ', transport.bullmq],
  ]) {
    console.log(
      `  ${label} first token p50 ${f(t.firstTokenMs.p50)} ms p99 ${f(t.firstTokenMs.p99)} ms; whole request p50 ${f(t.requestMs.p50)} ms p99 ${f(t.requestMs.p99)} ms`,
    );
  }
}
