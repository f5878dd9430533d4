#!/usr/bin/env node
// Serving transport overhead (issue 19, ADR 0006), a first cut of `bench:serve`: time to first
// token and tokens/s of one streamed completion at a time through the built api and one
// serve-only worker (Redis Streams both ways, cpu backend), against lora-core's
// CompletionEngine generating in this process on the same model and prompt. Greedy, a fixed
// number of tokens (stop tokens disabled in-process; the served prompt is chosen so that the
// model does not stop early, and tokens are counted from usage). Needs the built apps and libs
// (`npx nx run-many -t build`).
//   npm run bench:serve [-- --smoke] [-- --requests N] [-- --tokens N] [-- --json]
// A benchmark prints figures; it asserts nothing about speed. Not yet measured here: the
// 16-concurrent aggregate over 1/4/16 adapters, and the BullMQ baseline (ADR 0006).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { percentile, sleep } from './bench-helpers.mjs';

const require = createRequire(import.meta.url);
const root = path.resolve(import.meta.dirname, '../..');
const db = require(path.join(root, 'libs/db/dist/index.js'));
const data = require(path.join(root, 'libs/data/dist/index.js'));
const core = require(path.join(root, 'libs/lora-core/dist/index.js'));
// Scratch databases and free ports come from the built test harness library.
const { createScratchDatabase, freePort } = require(path.join(root, 'libs/testing/dist/index.js'));

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const at = args.indexOf(name);
  return at >= 0 ? Number(args[at + 1]) : fallback;
};
// --smoke: a tiny budget that only proves the benchmark still runs.
const smoke = args.includes('--smoke');
const requests = option('--requests', smoke ? 2 : 20);
const tokens = option('--tokens', smoke ? 4 : 32);
const json = args.includes('--json');
const MODEL = 'lorafleet-tiny-llama';
const PROMPT = 'It was the best of times, it was the';
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

const summary = (values) => ({ p50: percentile(values, 50), p99: percentile(values, 99) });

async function inProcess() {
  await core.selectBackend('cpu');
  const dir = path.join(root, 'models', MODEL);
  const model = await core.loadCausalLM(dir);
  const tokenizer = await data.loadTokenizer(dir);
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
  model.dispose();
  return { ttftMs: summary(ttft), tokensPerSecond: summary(rates) };
}

async function throughApi() {
  const scratch = await createScratchDatabase('lorafleet_bench');
  const ds = db.createDataSource({ url: scratch.url });
  await ds.initialize();
  await db.runMigrations(ds);
  const tenants = new db.TenantsRepository(ds);
  const tenant = await tenants.createTenant('bench');
  const key = (await new db.ApiKeysRepository(ds).issue(tenant.id)).plaintext;
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
  const processes = [
    start('api', { PORT: String(port), HOST: '127.0.0.1' }),
    start('worker', { LORAFLEET_BACKEND: 'cpu', LORAFLEET_WORKER_ROLES: 'serve' }),
  ];
  try {
    for (;;) {
      const ready = await fetch(`${base}/readyz`).catch(() => undefined);
      if (ready?.ok) break;
      await sleep(100);
    }
    const ttft = [];
    const rates = [];
    for (let i = 0; i <= requests; i += 1) {
      const started = performance.now();
      const response = await fetch(`${base}/v1/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          model: MODEL,
          prompt: PROMPT,
          max_tokens: tokens,
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
      const usage = text
        .split('\n\n')
        .map((event) => event.replace(/^data: /, ''))
        .filter((event) => event.startsWith('{'))
        .map((event) => JSON.parse(event))
        .find((chunk) => chunk.usage)?.usage;
      if (i === 0) continue; // warm-up: the worker loads the base model on this one
      ttft.push(first - started);
      rates.push(usage.completion_tokens / ((ended - started) / 1000));
      if (usage.completion_tokens < tokens) {
        console.error(`note: request ${i} stopped after ${usage.completion_tokens} tokens`);
      }
    }
    return { ttftMs: summary(ttft), tokensPerSecond: summary(rates) };
  } finally {
    for (const child of processes) child.kill('SIGTERM');
    await sleep(1000);
    // The request stream and its consumer group stay behind otherwise (replies are deleted).
    const { Redis } = require('ioredis');
    const redis = new Redis(redisUrl);
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
    await ds.destroy();
    await scratch.drop();
  }
}

const local = await inProcess();
const served = await throughApi();
const result = {
  model: MODEL,
  requests,
  tokens,
  loadAverage: loadavg()[0],
  inProcess: local,
  throughApi: served,
  ttftOverheadMsP50: served.ttftMs.p50 - local.ttftMs.p50,
  tokensPerSecondRatioP50: served.tokensPerSecond.p50 / local.tokensPerSecond.p50,
};
if (json) console.log(JSON.stringify(result, null, 2));
else {
  const f = (n) => n.toFixed(1);
  console.log(
    `serving overhead, ${MODEL}, cpu, ${requests} sequential streamed requests of ${tokens} tokens (load ${f(result.loadAverage)})`,
  );
  console.log(
    `  in-process   first token p50 ${f(local.ttftMs.p50)} ms p99 ${f(local.ttftMs.p99)} ms; ${f(local.tokensPerSecond.p50)} tokens/s p50`,
  );
  console.log(
    `  through API  first token p50 ${f(served.ttftMs.p50)} ms p99 ${f(served.ttftMs.p99)} ms; ${f(served.tokensPerSecond.p50)} tokens/s p50`,
  );
  console.log(
    `  overhead     first token +${f(result.ttftOverheadMsP50)} ms p50; tokens/s ×${result.tokensPerSecondRatioP50.toFixed(2)}`,
  );
}
