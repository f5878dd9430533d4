#!/usr/bin/env node
// Worker throughput benchmark (issue 6): the built api and 1 then 2 worker processes on N
// short jobs against the local Postgres and Redis. Prints jobs/min, queue wait p50/p99
// (created → started), per-job overhead (pick-up → first reported step, last step →
// succeeded) and checkpoint cost (bytes and ms per checkpoint).
//   npm run bench:worker [-- --smoke] [-- --json] [-- --jobs N]
// A benchmark prints figures; it asserts nothing about speed.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const root = path.resolve(import.meta.dirname, '../..');
const db = require(path.join(root, 'libs/db/dist/index.js'));

const args = process.argv.slice(2);
const smoke = args.includes('--smoke');
const json = args.includes('--json');
const jobsArg = args.indexOf('--jobs');
const jobCount = jobsArg >= 0 ? Number(args[jobsArg + 1]) : smoke ? 6 : 100;
const stepsPerJob = smoke ? 4 : 10;
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

const freePort = () =>
  new Promise((resolve) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const percentile = (values, p) => {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
};

function startApp(app, env) {
  const child = spawn(process.execPath, [path.join(root, `apps/${app}/dist/main.js`)], {
    cwd: root,
    env: { ...process.env, ...env, LORAFLEET_LOG_LEVEL: 'error' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return child;
}

async function runScenario(workers) {
  const scratch = await db.createScratchDatabase('lorafleet_bench');
  const ds = db.createDataSource({ url: scratch.url });
  await ds.initialize();
  await db.runMigrations(ds);
  const tenants = new db.TenantsRepository(ds);
  const tenant = await tenants.createTenant('bench');
  const key = (await tenants.issueApiKey(tenant.id)).plaintext;
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const shared = {
    DATABASE_URL: scratch.url,
    REDIS_URL: redisUrl,
    LORAFLEET_MODELS_DIR: path.join(root, 'models'),
    LORAFLEET_QUEUE_PREFIX: `lf-bench-${randomBytes(4).toString('hex')}`,
  };
  const processes = [
    startApp('api', { ...shared, PORT: String(port), HOST: '127.0.0.1', LORAFLEET_OUTBOX_POLL_MS: '50', LORAFLEET_MIN_EXAMPLES: '2', LORAFLEET_MAX_ACTIVE_JOBS_PER_TENANT: '10000' }),
  ];
  for (let i = 0; i < workers; i++) {
    processes.push(
      startApp('worker', { ...shared, LORAFLEET_BACKEND: 'cpu', LORAFLEET_WORKER_ID: `bench-${i}`, LORAFLEET_CHECKPOINT_EVERY_STEPS: '2', LORAFLEET_CONTROL_POLL_MS: '500' }),
    );
  }
  try {
    const headers = { authorization: `Bearer ${key}` };
    for (;;) {
      const ready = await fetch(`${base}/readyz`).then((r) => r.ok).catch(() => false);
      const registered = (await ds.query('SELECT count(*)::int AS n FROM workers'))[0].n;
      if (ready && registered === workers) break;
      await sleep(200);
    }
    const lines = Array.from({ length: 8 }, (_, i) => JSON.stringify({ prompt: `Say ${i}: `, completion: `ok ${i}` }));
    const form = new FormData();
    form.append('purpose', 'fine-tune');
    form.append('file', new Blob([lines.join('\n') + '\n']), 'bench.jsonl');
    const file = await (await fetch(`${base}/v1/files`, { method: 'POST', headers, body: form })).json();
    const started = Date.now();
    const ids = [];
    for (let i = 0; i < jobCount; i++) {
      const response = await fetch(`${base}/v1/fine_tuning/jobs`, {
        method: 'POST',
        headers: { ...headers, 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'tiny-random-gpt2',
          training_file: file.id,
          seed: i,
          hyperparameters: { n_epochs: 10, batch_size: 2 },
          training: { max_seq_length: 32, max_steps: stepsPerJob },
        }),
      });
      ids.push((await response.json()).id);
    }
    for (;;) {
      const rows = await ds.query(
        "SELECT count(*)::int AS n FROM fine_tuning_jobs WHERE status IN ('succeeded', 'failed', 'cancelled')",
      );
      if (rows[0].n >= jobCount) break;
      await sleep(250);
    }
    const elapsedMs = Date.now() - started;
    const jobs = await ds.query(
      `SELECT j.id, j.status, extract(epoch FROM j.created_at) * 1000 AS created,
              extract(epoch FROM j.started_at) * 1000 AS started, extract(epoch FROM j.finished_at) * 1000 AS finished,
              (SELECT extract(epoch FROM min(e.created_at)) * 1000 FROM job_events e WHERE e.job_id = j.id AND e.type = 'metrics') AS first_step,
              (SELECT extract(epoch FROM max(e.created_at)) * 1000 FROM job_events e WHERE e.job_id = j.id AND e.type = 'metrics' AND (e.data->>'final') IS NULL) AS last_step
         FROM fine_tuning_jobs j`,
    );
    const checkpoints = await ds.query('SELECT bytes FROM checkpoints');
    const succeeded = jobs.filter((j) => j.status === 'succeeded').length;
    return {
      workers,
      jobs: jobCount,
      succeeded,
      steps_per_job: stepsPerJob,
      wall_seconds: elapsedMs / 1000,
      jobs_per_minute: (succeeded / elapsedMs) * 60_000,
      queue_wait_ms: {
        p50: percentile(jobs.map((j) => j.started - j.created), 50),
        p99: percentile(jobs.map((j) => j.started - j.created), 99),
      },
      pickup_to_first_step_ms: { p50: percentile(jobs.filter((j) => j.first_step).map((j) => j.first_step - j.started), 50) },
      last_step_to_succeeded_ms: { p50: percentile(jobs.filter((j) => j.last_step).map((j) => j.finished - j.last_step), 50) },
      checkpoint_bytes: checkpoints.length ? checkpoints[0].bytes : null,
    };
  } finally {
    for (const child of processes) child.kill('SIGTERM');
    await Promise.all(processes.map((c) => new Promise((resolve) => (c.exitCode !== null ? resolve() : c.once('exit', resolve)))));
    await ds.destroy();
    await scratch.drop();
  }
}

const results = [];
for (const workers of [1, 2]) results.push(await runScenario(workers));
const ratio = results[1].jobs_per_minute / results[0].jobs_per_minute;
if (json) {
  console.log(JSON.stringify({ smoke, results, scaling_2_over_1: ratio }));
} else {
  console.log(`worker benchmark (${smoke ? 'smoke' : 'full'}): ${jobCount} jobs × ${stepsPerJob} steps on tiny-random-gpt2, cpu backend`);
  console.log('workers  jobs/min  queue-wait p50/p99 ms  pickup→1st step p50 ms  last step→done p50 ms  checkpoint bytes');
  for (const r of results) {
    console.log(
      `${String(r.workers).padStart(7)}  ${r.jobs_per_minute.toFixed(1).padStart(8)}  ${`${Math.round(r.queue_wait_ms.p50)}/${Math.round(r.queue_wait_ms.p99)}`.padStart(21)}  ${String(Math.round(r.pickup_to_first_step_ms.p50 ?? NaN)).padStart(22)}  ${String(Math.round(r.last_step_to_succeeded_ms.p50 ?? NaN)).padStart(21)}  ${String(r.checkpoint_bytes).padStart(16)}`,
    );
  }
  console.log(`scaling 2 workers / 1 worker: ${ratio.toFixed(2)}× (2 cores shared with api, Postgres and Redis)`);
}
