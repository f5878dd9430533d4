#!/usr/bin/env node
// Worker throughput benchmark (issue 6): the built api and 1 then 2 worker processes on N
// short jobs against the local Postgres and Redis. Prints jobs/min, queue wait p50/p99
// (created → started), per-job overhead (pick-up → first reported step, last step →
// succeeded) and checkpoint cost (bytes and ms per checkpoint) for the tiny model the jobs
// train and for the reference model of tools/bench/bench-train.ts (GPT-2 style, d = 256,
// 4 layers, r = 8 on c_attn): encode the training state, store it in Postgres the way the
// worker does (fenced insert + prune, one transaction), decode it to resume. Needs the built
// libs (`npx nx run-many -t build`).
//   npm run bench:worker [-- --smoke] [-- --json] [-- --jobs N] [-- --checkpoint-only]
// A benchmark prints figures; it asserts nothing about speed.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpus, loadavg } from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { percentile, sleep } from './bench-helpers.mjs';

const require = createRequire(import.meta.url);
const root = path.resolve(import.meta.dirname, '../..');
const db = require(path.join(root, 'libs/db/dist/index.js'));
// Scratch databases and free ports come from the built test harness library.
const { createScratchDatabase, freePort } = require(path.join(root, 'libs/testing/dist/index.js'));

const args = process.argv.slice(2);
const smoke = args.includes('--smoke');
const json = args.includes('--json');
const checkpointOnly = args.includes('--checkpoint-only');
const jobsArg = args.indexOf('--jobs');
const jobCount = jobsArg >= 0 ? Number(args[jobsArg + 1]) : smoke ? 6 : 100;
const stepsPerJob = smoke ? 4 : 10;
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

function startApp(app, env) {
  const child = spawn(process.execPath, [path.join(root, `apps/${app}/dist/main.js`)], {
    cwd: root,
    env: { ...process.env, ...env, LORAFLEET_LOG_LEVEL: 'error' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return child;
}

async function runScenario(workers) {
  const scratch = await createScratchDatabase('lorafleet_bench');
  const ds = db.createDataSource({ url: scratch.url });
  await ds.initialize();
  await db.runMigrations(ds);
  const tenant = await new db.TenantsRepository(ds).createTenant('bench');
  const key = (await new db.ApiKeysRepository(ds).issue(tenant.id)).plaintext;
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const shared = {
    DATABASE_URL: scratch.url,
    REDIS_URL: redisUrl,
    LORAFLEET_MODELS_DIR: path.join(root, 'models'),
    LORAFLEET_QUEUE_PREFIX: `lf-bench-${randomBytes(4).toString('hex')}`,
  };
  const processes = [
    startApp('api', {
      ...shared,
      PORT: String(port),
      HOST: '127.0.0.1',
      LORAFLEET_OUTBOX_POLL_MS: '50',
      LORAFLEET_MIN_EXAMPLES: '2',
      LORAFLEET_MAX_ACTIVE_JOBS_PER_TENANT: '10000',
    }),
  ];
  for (let i = 0; i < workers; i++) {
    processes.push(
      startApp('worker', {
        ...shared,
        LORAFLEET_BACKEND: 'cpu',
        LORAFLEET_WORKER_ID: `bench-${i}`,
        LORAFLEET_CHECKPOINT_EVERY_STEPS: '2',
        LORAFLEET_CONTROL_POLL_MS: '500',
      }),
    );
  }
  try {
    const headers = { authorization: `Bearer ${key}` };
    for (;;) {
      const ready = await fetch(`${base}/readyz`)
        .then((r) => r.ok)
        .catch(() => false);
      const registered = (await ds.query('SELECT count(*)::int AS n FROM workers'))[0].n;
      if (ready && registered === workers) break;
      await sleep(200);
    }
    const lines = Array.from({ length: 8 }, (_, i) =>
      JSON.stringify({ prompt: `Say ${i}: `, completion: `ok ${i}` }),
    );
    const form = new FormData();
    form.append('purpose', 'fine-tune');
    form.append('file', new Blob([lines.join('\n') + '\n']), 'bench.jsonl');
    const file = await (
      await fetch(`${base}/v1/files`, { method: 'POST', headers, body: form })
    ).json();
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
        p50: percentile(
          jobs.map((j) => j.started - j.created),
          50,
        ),
        p99: percentile(
          jobs.map((j) => j.started - j.created),
          99,
        ),
      },
      pickup_to_first_step_ms: {
        p50: percentile(
          jobs.filter((j) => j.first_step).map((j) => j.first_step - j.started),
          50,
        ),
      },
      last_step_to_succeeded_ms: {
        p50: percentile(
          jobs.filter((j) => j.last_step).map((j) => j.finished - j.last_step),
          50,
        ),
      },
      checkpoint_bytes: checkpoints.length ? checkpoints[0].bytes : null,
      load_average_1min_end: Number(loadavg()[0].toFixed(2)),
    };
  } finally {
    for (const child of processes) child.kill('SIGTERM');
    await Promise.all(
      processes.map(
        (c) =>
          new Promise((resolve) => (c.exitCode !== null ? resolve() : c.once('exit', resolve))),
      ),
    );
    await ds.destroy();
    await scratch.drop();
  }
}

const median = (values) => percentile(values, 50);

/**
 * Checkpoint cost of the reference model, measured alone so the figure is not mixed with job
 * start-up: bytes of one checkpoint blob, ms to encode it (`checkpointAsync`, as the trainer
 * does), ms to store it through `CheckpointsRepository.saveCheckpoint` (fenced insert and prune in
 * one transaction, as the worker does) and ms to restore from it. Medians of `repeats`.
 */
async function referenceCheckpointCost() {
  const lc = require(path.join(root, 'libs/lora-core/dist/index.js'));
  const data = require(path.join(root, 'libs/data/dist/index.js'));
  const contracts = require(path.join(root, 'libs/contracts/dist/index.js'));
  const backend = await lc.selectBackend('cpu');
  // tools/bench/bench-train.ts REFERENCE. The vocabulary does not enter the checkpoint: only
  // the adapter, its AdamW moments, the step, RNG and data cursor do.
  const reference = {
    n_embd: 256,
    n_layer: 4,
    n_head: 4,
    n_positions: 128,
    vocab_size: 4096,
    r: 8,
  };
  const model = lc.createRandomCausalLM(
    lc.parseModelConfig({ model_type: 'gpt2', ...reference }),
    1,
    { mode: 'lora' },
  );
  model.addAdapter(
    'bench',
    {
      r: reference.r,
      alpha: 2 * reference.r,
      dropout: 0,
      targetModules: ['c_attn'],
      useRslora: false,
    },
    1,
  );
  // A short sequence is enough: one real step creates the optimizer moments, and the
  // checkpoint's size does not depend on the batch.
  const ids = Array.from({ length: 16 }, (_, t) => (t * 104729) % reference.vocab_size);
  // The one resolver every run goes through (issue 15): seed 1, learning rate 1e-4.
  const spec = data.resolveFineTuneSpec(
    {
      seed: 1,
      hyperparameters: { batch_size: 1, n_epochs: 50 },
      lora: { r: reference.r, alpha: 2 * reference.r, target_modules: ['c_attn'] },
      training: { learning_rate: 1e-4, max_seq_length: 16 },
    },
    { model: 'bench', contextLength: reference.n_positions, trainingExamples: 1 },
  );
  const trainer = new lc.Trainer({
    model,
    train: [{ inputIds: ids, lossMask: ids.map((_, t) => (t === 0 ? 0 : 1)) }],
    padTokenId: 0,
    shuffle: false,
    spec,
  });
  const repeats = smoke ? 3 : 15;
  const encodeMs = [];
  const restoreMs = [];
  const storeMs = [];
  let blob;
  const trainableParameters = model.trainableVariables().reduce((n, v) => n + v.size, 0);
  const scratch = await createScratchDatabase('lorafleet_bench_ckpt');
  const ds = db.createDataSource({ url: scratch.url });
  try {
    await trainer.trainStep();
    for (let i = 0; i < repeats; i++) {
      let t = performance.now();
      blob = await trainer.checkpointAsync();
      encodeMs.push(performance.now() - t);
      t = performance.now();
      trainer.restore(blob);
      restoreMs.push(performance.now() - t);
    }
    await ds.initialize();
    await db.runMigrations(ds);
    const tenant = await new db.TenantsRepository(ds).createTenant('bench');
    const jobs = new db.JobsRepository(ds);
    const job = await jobs.createWithOutbox(
      {
        tenantId: tenant.id,
        model: 'reference',
        baseModelHash: null,
        trainingFileId: 'file-bench',
        validationFileId: null,
        suffix: null,
        metadata: null,
        spec,
        idempotencyKey: null,
        requestHash: null,
      },
      (id) => contracts.fineTuneDelivery({ id, tenantId: tenant.id }),
    );
    const claim = await new db.AttemptsRepository(ds).claimAttempt(job.id, 'bench', backend);
    const checkpoints = new db.CheckpointsRepository(ds);
    const bytes = Buffer.from(blob);
    for (let i = 0; i < repeats + 1; i++) {
      const t = performance.now();
      const id = await checkpoints.saveCheckpoint(
        job.id,
        claim.leaseToken,
        { attempt: 1, step: i + 1, metrics: { train_loss: 1 }, blob: bytes },
        3,
      );
      if (id === null) throw new Error('checkpoint refused');
      if (i > 0) storeMs.push(performance.now() - t); // the first warms the connection pool
    }
  } finally {
    trainer.dispose();
    model.dispose();
    if (ds.isInitialized) await ds.destroy();
    await scratch.drop();
  }
  return {
    model: `gpt2 d=${reference.n_embd} layers=${reference.n_layer} vocab=${reference.vocab_size} r=${reference.r} (c_attn)`,
    backend,
    trainable_parameters: trainableParameters,
    bytes: blob.byteLength,
    encode_ms: median(encodeMs),
    store_ms: median(storeMs),
    restore_ms: median(restoreMs),
    repeats,
  };
}

const loadAtStart = loadavg().map((n) => Number(n.toFixed(2)));
const checkpoint = await referenceCheckpointCost();
const results = [];
if (!checkpointOnly) for (const workers of [1, 2]) results.push(await runScenario(workers));
const ratio = checkpointOnly ? null : results[1].jobs_per_minute / results[0].jobs_per_minute;
const loadAverage = loadavg().map((n) => Number(n.toFixed(2)));
if (json) {
  console.log(
    JSON.stringify({
      smoke,
      results,
      scaling_2_over_1: ratio,
      checkpoint_reference: checkpoint,
      cpus: cpus().length,
      load_average_start: loadAtStart,
      load_average_end: loadAverage,
    }),
  );
} else {
  console.log(
    `worker benchmark (${smoke ? 'smoke' : 'full'}): ${jobCount} jobs × ${stepsPerJob} steps on tiny-random-gpt2, cpu backend`,
  );
  console.log(
    'workers  jobs/min  queue-wait p50/p99 ms  pickup→1st step p50 ms  last step→done p50 ms  checkpoint bytes',
  );
  for (const r of results) {
    console.log(
      `${String(r.workers).padStart(7)}  ${r.jobs_per_minute.toFixed(1).padStart(8)}  ${`${Math.round(r.queue_wait_ms.p50)}/${Math.round(r.queue_wait_ms.p99)}`.padStart(21)}  ${String(Math.round(r.pickup_to_first_step_ms.p50 ?? NaN)).padStart(22)}  ${String(Math.round(r.last_step_to_succeeded_ms.p50 ?? NaN)).padStart(21)}  ${String(r.checkpoint_bytes).padStart(16)}`,
    );
  }
  if (ratio !== null) {
    console.log(
      `scaling 2 workers / 1 worker: ${ratio.toFixed(2)}× (${cpus().length} cores shared with api, Postgres and Redis)`,
    );
  }
  console.log(
    `checkpoint, reference model (${checkpoint.model}, ${checkpoint.trainable_parameters} trainable parameters, ${checkpoint.backend}): ` +
      `${checkpoint.bytes} bytes; encode ${checkpoint.encode_ms.toFixed(1)} ms, store in Postgres ${checkpoint.store_ms.toFixed(1)} ms, restore ${checkpoint.restore_ms.toFixed(1)} ms (medians of ${checkpoint.repeats})`,
  );
  console.log(
    `load average (1/5/15 min): ${loadAtStart.join(' ')} at the start, ${loadAverage.join(' ')} at the end, on ${cpus().length} cores`,
  );
}
