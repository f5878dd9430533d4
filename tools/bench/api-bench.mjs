#!/usr/bin/env node
// `npm run bench:api`: REST API throughput and latency against two references, one run, one
// machine. The API (the built apps/api/dist) runs in this process on a scratch database
// holding 10k jobs; a bare Fastify route and a Fastify route doing one indexed Postgres
// query run beside it as references. The load generator is a worker thread with a fixed
// number of keep-alive connections, each sending its next request when the previous one
// answered (closed loop, like autocannon, which is not installed here).
//
//   npm run bench:api                       5 s per scenario at 100 connections
//   npm run bench:api -- --smoke            a few hundred requests per scenario (CI check)
//   npm run -s bench:api -- --json          one JSON object on stdout instead of the table
//   options: --connections N  --duration S  --jobs N (rows seeded, default 10000)
//            --only TEXT (run only the scenarios whose name contains TEXT; no ratios)
//            --latency-jobs N (submit→running samples, default 20; 0 skips the worker)
//
// Submit→running: before the load scenarios, one worker (the built apps/worker/dist, as a
// child process, LORAFLEET_BACKEND=cpu) sits idle; N one-step jobs on models/tiny-random-gpt2
// are submitted one at a time, each after the previous finished, and the time from sending
// the POST to the job's `started_at` (written by the worker's claim) is recorded.
//
// Needs Postgres (DATABASE_URL, default the local trust-auth one) and Redis (REDIS_URL,
// default 127.0.0.1:6379); it uses a scratch database and its own BullMQ prefix, and removes
// both when done.
import { Agent, request } from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

if (isMainThread) {
  await main();
} else {
  await generateLoad(workerData);
}

/** Parses argv; unknown flags are an error so typos do not silently bench the defaults. */
function parseArgs(argv) {
  const options = {
    smoke: false,
    json: false,
    connections: 100,
    duration: 5,
    jobs: 10_000,
    'latency-jobs': 20,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--smoke') options.smoke = true;
    else if (arg === '--json') options.json = true;
    else if (arg === '--only') options.only = argv[++i];
    else if (['--connections', '--duration', '--jobs', '--latency-jobs'].includes(arg)) {
      const value = Number(argv[++i]);
      const min = arg === '--latency-jobs' ? 0 : Number.MIN_VALUE;
      if (!Number.isFinite(value) || value < min) throw new Error(`${arg} needs a positive number`);
      options[arg.slice(2)] = value;
    } else if (arg === '--') continue;
    else throw new Error(`unknown option ${arg} (see the header of tools/bench/api-bench.mjs)`);
  }
  if (options.smoke) {
    options.connections = Math.min(options.connections, 10);
    options.requests = 300; // per scenario, after 50 warm-up requests
    options.jobs = Math.min(options.jobs, 1000);
    options['latency-jobs'] = Math.min(options['latency-jobs'], 3);
  }
  return options;
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const log = options.json ? () => undefined : (line) => console.log(line);
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
  const require = createRequire(path.join(root, 'package.json'));
  const { createApiApp } = require(path.join(root, 'apps/api/dist/bootstrap.js'));
  const { apiEnvShape, parseEnv } = require('@lorafleet/contracts');
  const {
    ApiKeysRepository,
    TenantsRepository,
    createDataSource,
    runMigrations,
  } = require('@lorafleet/db');
  // The scratch database comes from the built test harness library (libs/testing/dist).
  const { createScratchDatabase } = require('@lorafleet/testing');
  const Fastify = require('fastify');
  const { Pool } = require('pg');
  const { Redis } = require('ioredis');

  const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  const prefix = `lf-bench-${process.pid}`;
  const scratch = await createScratchDatabase('lorafleet_bench');
  const cleanup = [];
  try {
    log(`scratch database ${scratch.name}; seeding ${options.jobs} jobs …`);
    const dataSource = createDataSource({ url: scratch.url });
    await dataSource.initialize();
    cleanup.push(() => dataSource.destroy());
    await runMigrations(dataSource);
    const tenant = await new TenantsRepository(dataSource).createTenant('bench');
    const apiKey = (await new ApiKeysRepository(dataSource).issue(tenant.id)).plaintext;

    const env = parseEnv(apiEnvShape, {
      DATABASE_URL: scratch.url,
      REDIS_URL: redisUrl,
      LORAFLEET_MODELS_DIR: path.join(root, 'models'),
      LORAFLEET_QUEUE_PREFIX: prefix,
      LORAFLEET_MIN_EXAMPLES: '2',
      LORAFLEET_MAX_ACTIVE_JOBS_PER_TENANT: '100000',
      LORAFLEET_RECONCILE_MS: '3600000',
      LORAFLEET_LOG_LEVEL: 'error',
    });
    const app = await createApiApp(env);
    await app.listen({ port: 0, host: '127.0.0.1' });
    cleanup.unshift(() => app.close());
    const apiBase = `http://127.0.0.1:${app.getHttpServer().address().port}`;
    const auth = { authorization: `Bearer ${apiKey}` };

    // One real file and job through the API, then 10k copies of that row (SQL is faster than
    // 10k POSTs, and the copies are finished, so the relay and reconciler leave them alone).
    const form = new FormData();
    form.append('purpose', 'fine-tune');
    const lines = ['hi', 'yes', 'no'].map((w) =>
      JSON.stringify({ prompt: `Say ${w}: `, completion: w }),
    );
    form.append('file', new Blob([`${lines.join('\n')}\n`]), 'bench.jsonl');
    const file = await (
      await fetch(`${apiBase}/v1/files`, { method: 'POST', headers: auth, body: form })
    ).json();
    const jobBody = JSON.stringify({ model: 'tiny-random-gpt2', training_file: file.id });
    const seed = await fetch(`${apiBase}/v1/fine_tuning/jobs`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: jobBody,
    });
    if (seed.status !== 201) throw new Error(`seed job: ${seed.status} ${await seed.text()}`);
    const template = (await seed.json()).id;
    await dataSource.query(
      `INSERT INTO fine_tuning_jobs (id, tenant_id, model, status, training_file_id, spec,
              metadata, created_at, updated_at, finished_at)
       SELECT 'ftjob-bench' || lpad(g::text, 8, '0'), j.tenant_id, j.model,
              (ARRAY['succeeded','failed','cancelled'])[1 + g % 3], j.training_file_id,
              jsonb_set(j.spec, '{seed}', to_jsonb(g)),
              jsonb_build_object('batch', (g % 10)::text),
              now() - (g * interval '1 second'), now(), now()
         FROM fine_tuning_jobs j, generate_series(1, $2) g
        WHERE j.id = $1`,
      [template, options.jobs - 1],
    );
    await dataSource.query('ANALYZE fine_tuning_jobs');
    const ids = (
      await dataSource.query('SELECT id FROM fine_tuning_jobs ORDER BY random() LIMIT 2000')
    ).map((r) => r.id);

    // References: same process, same Postgres, same pool size as the API's TypeORM pool.
    const bare = Fastify({ logger: false });
    bare.get('/ping', async () => ({ ok: true }));
    await bare.listen({ port: 0, host: '127.0.0.1' });
    cleanup.unshift(() => bare.close());
    const pool = new Pool({ connectionString: scratch.url, max: 10 });
    cleanup.push(() => pool.end());
    const oneQuery = Fastify({ logger: false });
    oneQuery.get('/jobs/:id', async (req, reply) => {
      const { rows } = await pool.query('SELECT * FROM fine_tuning_jobs WHERE id = $1', [
        req.params.id,
      ]);
      if (rows.length === 0) return reply.code(404).send({ error: 'not found' });
      return rows[0];
    });
    await oneQuery.listen({ port: 0, host: '127.0.0.1' });
    cleanup.unshift(() => oneQuery.close());

    const scenarios = [
      {
        name: 'bare Fastify route',
        base: `http://127.0.0.1:${bare.server.address().port}`,
        method: 'GET',
        paths: ['/ping'],
        expect: 200,
      },
      {
        name: 'Fastify + 1 indexed query',
        base: `http://127.0.0.1:${oneQuery.server.address().port}`,
        method: 'GET',
        paths: ids.map((id) => `/jobs/${id}`),
        expect: 200,
      },
      {
        // The API's framework cost alone (Nest on Fastify, hooks, no database): how much of
        // GET job's time is the pipeline rather than the query.
        name: 'API /healthz (no query)',
        base: apiBase,
        method: 'GET',
        paths: ['/healthz'],
        expect: 200,
      },
      {
        name: 'GET job',
        base: apiBase,
        method: 'GET',
        paths: ids.map((id) => `/v1/fine_tuning/jobs/${id}`),
        headers: auth,
        expect: 200,
      },
      {
        name: 'GET list page (20)',
        base: apiBase,
        method: 'GET',
        paths: ['/v1/fine_tuning/jobs?limit=20'],
        headers: auth,
        expect: 200,
      },
      {
        name: 'POST job',
        base: apiBase,
        method: 'POST',
        paths: ['/v1/fine_tuning/jobs'],
        headers: { ...auth, 'content-type': 'application/json' },
        body: jobBody,
        expect: 201,
      },
    ];

    // Submit→running with an idle worker, before the load scenarios fill the queue.
    let submitToRunning = null;
    const wantLatency =
      options['latency-jobs'] > 0 && (!options.only || 'submit→running'.includes(options.only));
    if (wantLatency) {
      log('… submit→running (one idle cpu worker)');
      await fetch(`${apiBase}/v1/fine_tuning/jobs/${template}/cancel`, {
        method: 'POST',
        headers: auth,
      });
      submitToRunning = await measureSubmitToRunning({
        root,
        dataSource,
        apiBase,
        auth,
        fileId: file.id,
        env: {
          DATABASE_URL: scratch.url,
          REDIS_URL: redisUrl,
          LORAFLEET_QUEUE_PREFIX: prefix,
          LORAFLEET_MODELS_DIR: path.join(root, 'models'),
        },
        samples: options['latency-jobs'],
        log,
      });
    }

    const results = [];
    for (const scenario of scenarios.filter(
      (s) => !options.only || s.name.includes(options.only),
    )) {
      log(`… ${scenario.name}`);
      results.push({ name: scenario.name, ...(await runScenario(scenario, options)) });
    }

    const by = Object.fromEntries(results.map((r) => [r.name, r]));
    const ratio = (a, b) =>
      by[a] && by[b] ? Math.round((by[a].rps / by[b].rps) * 100) / 100 : null;
    const ratios = {
      'GET job / Fastify+query': ratio('GET job', 'Fastify + 1 indexed query'),
      'GET list / Fastify+query': ratio('GET list page (20)', 'Fastify + 1 indexed query'),
      'POST job / Fastify+query': ratio('POST job', 'Fastify + 1 indexed query'),
      'GET job / bare Fastify': ratio('GET job', 'bare Fastify route'),
      'Fastify+query / bare Fastify': ratio('Fastify + 1 indexed query', 'bare Fastify route'),
    };
    // Targets of issue 5: GET job p99 ≤ 50 ms at 100 connections; ≥ half the reference req/s.
    const targets = {
      'GET job p99 <= 50 ms': by['GET job'] ? by['GET job'].p99 <= 50 : null,
      'GET job >= 0.5x Fastify+query req/s':
        ratios['GET job / Fastify+query'] === null
          ? null
          : ratios['GET job / Fastify+query'] >= 0.5,
    };
    const report = {
      when: new Date().toISOString(),
      machine: {
        cpus: os.cpus().length,
        model: os.cpus()[0]?.model ?? 'unknown',
        loadavg: os.loadavg().map((l) => Math.round(l * 100) / 100),
        node: process.version,
      },
      config: {
        connections: options.connections,
        ...(options.smoke ? { requests: options.requests } : { durationSeconds: options.duration }),
        seededJobs: options.jobs,
      },
      results,
      ratios,
      targets,
      submitToRunning,
    };
    if (options.json) {
      console.log(JSON.stringify(report));
    } else {
      printTable(report);
    }
    if (results.some((r) => r.errors > 0) || (submitToRunning && submitToRunning.failed > 0)) {
      process.exitCode = 1;
    }
  } finally {
    for (const step of cleanup) await step().catch(() => undefined);
    const redis = new Redis(redisUrl, { maxRetriesPerRequest: 0, retryStrategy: () => null });
    await redis
      .keys(`${prefix}:*`)
      .then((keys) => (keys.length ? redis.del(...keys) : 0))
      .catch(() => 0);
    redis.disconnect();
    await scratch.drop();
  }
}

/**
 * Starts one worker, waits until it is registered and idle, then submits `samples` one-step
 * jobs one after another (plus one unrecorded warm-up), each after the previous one finished.
 * Latency = the job's `started_at` (Postgres clock, same machine) − when the POST was sent.
 */
async function measureSubmitToRunning({
  root,
  dataSource,
  apiBase,
  auth,
  fileId,
  env,
  samples,
  log,
}) {
  const { spawn } = await import('node:child_process');
  const output = [];
  const worker = spawn(process.execPath, [path.join(root, 'apps/worker/dist/main.js')], {
    cwd: root,
    env: {
      ...process.env,
      ...env,
      LORAFLEET_BACKEND: 'cpu',
      LORAFLEET_WORKER_ID: 'bench-worker',
      LORAFLEET_LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  worker.stdout.on('data', (c) => output.push(String(c)));
  worker.stderr.on('data', (c) => output.push(String(c)));
  const exited = new Promise((resolve) => worker.once('exit', resolve));
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const deadline = (ms, what) => {
    const at = Date.now() + ms;
    return () => {
      if (worker.exitCode !== null) throw new Error(`worker exited:\n${output.join('')}`);
      if (Date.now() > at) throw new Error(`timed out waiting for ${what}:\n${output.join('')}`);
    };
  };
  try {
    const registered = deadline(120_000, 'the worker to register');
    for (;;) {
      const rows = await dataSource.query("SELECT status FROM workers WHERE id = 'bench-worker'");
      if (rows[0]?.status === 'idle') break;
      registered();
      await sleep(100);
    }
    const body = JSON.stringify({
      model: 'tiny-random-gpt2',
      training_file: fileId,
      hyperparameters: { n_epochs: 1, batch_size: 1 },
      lora: { r: 2, alpha: 4, target_modules: ['c_attn'] },
      training: { max_steps: 1, max_seq_length: 16 },
    });
    const latencies = [];
    let failed = 0;
    for (let i = 0; i <= samples; i++) {
      const sent = Date.now();
      const created = await fetch(`${apiBase}/v1/fine_tuning/jobs`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body,
      });
      if (created.status !== 201)
        throw new Error(`POST job: ${created.status} ${await created.text()}`);
      const { id } = await created.json();
      const finished = deadline(120_000, `job ${id} to finish`);
      let row;
      for (;;) {
        [row] = await dataSource.query(
          'SELECT status, started_at FROM fine_tuning_jobs WHERE id = $1',
          [id],
        );
        if (['succeeded', 'failed', 'cancelled'].includes(row.status)) break;
        finished();
        await sleep(10);
      }
      if (row.status !== 'succeeded') failed++;
      if (i > 0 && row.started_at) latencies.push(row.started_at.getTime() - sent);
      // The worker reports idle once the attempt is over; then it waits on the queue.
      const idle = deadline(30_000, 'the worker to be idle again');
      while (
        (await dataSource.query("SELECT status FROM workers WHERE id = 'bench-worker'"))[0]
          ?.status !== 'idle'
      ) {
        idle();
        await sleep(10);
      }
      await sleep(100);
    }
    latencies.sort((a, b) => a - b);
    const at = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
    log(`  ${latencies.length} jobs: ${latencies.join(' ')} ms`);
    return {
      jobs: latencies.length,
      failed,
      p50: at(0.5),
      p99: at(0.99),
      max: latencies[latencies.length - 1],
      mean: Math.round(latencies.reduce((a, b) => a + b, 0) / latencies.length),
    };
  } finally {
    worker.kill('SIGTERM');
    const timer = setTimeout(() => worker.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }
}

/** Warm up, then measure one scenario in the load-generator thread. */
function runScenario(scenario, options) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(fileURLToPath(import.meta.url), {
      workerData: {
        scenario,
        connections: options.connections,
        durationMs: options.smoke ? undefined : options.duration * 1000,
        requests: options.smoke ? options.requests : undefined,
        warmup: options.smoke ? 50 : 1000,
      },
    });
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) => code !== 0 && reject(new Error(`load generator exited ${code}`)));
  });
}

/** Load-generator thread: `connections` closed loops over keep-alive sockets. */
async function generateLoad({ scenario, connections, durationMs, requests, warmup }) {
  const url = new URL(scenario.base);
  const agent = new Agent({ keepAlive: true, maxSockets: connections });
  const body = scenario.body ? Buffer.from(scenario.body) : undefined;
  let next = 0;
  const send = () =>
    new Promise((resolve) => {
      const started = process.hrtime.bigint();
      const req = request(
        {
          agent,
          host: url.hostname,
          port: url.port,
          method: scenario.method,
          path: scenario.paths[next++ % scenario.paths.length],
          headers: {
            ...(scenario.headers ?? {}),
            ...(body ? { 'content-length': body.length } : {}),
          },
        },
        (res) => {
          res.resume();
          res.once('end', () =>
            resolve({
              ok: res.statusCode === scenario.expect,
              ms: Number(process.hrtime.bigint() - started) / 1e6,
            }),
          );
        },
      );
      req.once('error', () =>
        resolve({ ok: false, ms: Number(process.hrtime.bigint() - started) / 1e6 }),
      );
      req.end(body);
    });

  const loop = async (budget, until) => {
    const latencies = [];
    let errors = 0;
    let issued = 0;
    await Promise.all(
      Array.from({ length: connections }, async () => {
        while (until ? Date.now() < until : issued < budget) {
          issued++;
          const { ok, ms } = await send();
          latencies.push(ms);
          if (!ok) errors++;
        }
      }),
    );
    return { latencies, errors };
  };

  await loop(warmup, durationMs ? Date.now() + Math.min(1000, durationMs / 5) : undefined);
  const started = process.hrtime.bigint();
  const { latencies, errors } = await loop(
    requests,
    durationMs ? Date.now() + durationMs : undefined,
  );
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  latencies.sort((a, b) => a - b);
  const at = (q) =>
    Math.round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] * 100) /
    100;
  agent.destroy();
  parentPort.postMessage({
    requests: latencies.length,
    errors,
    seconds: Math.round(seconds * 100) / 100,
    rps: Math.round(latencies.length / seconds),
    p50: at(0.5),
    p99: at(0.99),
    max: Math.round(latencies[latencies.length - 1] * 100) / 100,
  });
}

function printTable(report) {
  const { machine, config, results, ratios, targets } = report;
  console.log(
    `\n${machine.cpus} CPUs (${machine.model}), load ${machine.loadavg.join(' ')}, node ${machine.node}; ` +
      `${config.connections} connections, ${config.durationSeconds ? `${config.durationSeconds} s` : `${config.requests} requests`} per scenario, ${config.seededJobs} jobs in the database\n`,
  );
  const header = ['scenario', 'requests', 'req/s', 'p50 ms', 'p99 ms', 'max ms', 'errors'];
  const rows = results.map((r) =>
    [r.name, r.requests, r.rps, r.p50, r.p99, r.max, r.errors].map(String),
  );
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const row of rows) console.log(line(row));
  console.log('\nratios (req/s)');
  for (const [name, value] of Object.entries(ratios).filter(([, v]) => v !== null))
    console.log(`  ${name.padEnd(30)} ${value}`);
  if (report.submitToRunning) {
    const l = report.submitToRunning;
    console.log(
      `\nsubmit→running, one idle cpu worker: ${l.jobs} jobs, p50 ${l.p50} ms, p99 ${l.p99} ms, max ${l.max} ms, mean ${l.mean} ms${l.failed ? `, ${l.failed} FAILED` : ''}`,
    );
  }
  console.log('\ntargets (issue 5)');
  for (const [name, ok] of Object.entries(targets).filter(([, v]) => v !== null))
    console.log(`  ${name.padEnd(38)} ${ok ? 'met' : 'NOT met'}`);
}
