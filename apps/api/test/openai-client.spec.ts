/**
 * The official `openai` npm client (v6) against the API with only `baseURL` and `apiKey`
 * changed (DESIGN §4): upload, create, retrieve, auto-paginated listing, events, checkpoints,
 * cancel, the client's error classes, and a job polled to `succeeded` while a real worker
 * process (the built apps/worker, cpu backend) trains it.
 */
import { AttemptsRepository } from '@lorafleet/db';
import OpenAI, { toFile } from 'openai';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { GOOD_JSONL, MODELS_DIR, PREFERENCE_JSONL, startApi, type ApiHarness } from './api-harness';

jest.setTimeout(40_000);

/** GOOD_JSONL uploaded through the official client, as `purpose: fine-tune`. */
async function uploadTrainingFile(client: OpenAI) {
  return client.files.create({
    file: await toFile(Buffer.from(GOOD_JSONL), 'train.jsonl'),
    purpose: 'fine-tune',
  });
}

describe('official openai client', () => {
  let api: ApiHarness;
  let client: OpenAI;
  let other: OpenAI;

  beforeAll(async () => {
    api = await startApi({ LORAFLEET_MAX_ACTIVE_JOBS_PER_TENANT: '50' });
    const tenant = await api.tenants.createTenant('sdk');
    const key = (await api.apiKeys.issue(tenant.id)).plaintext;
    client = new OpenAI({ apiKey: key, baseURL: `${api.baseUrl}/v1` });
    const stranger = await api.tenants.createTenant('stranger');
    other = new OpenAI({
      apiKey: (await api.apiKeys.issue(stranger.id)).plaintext,
      baseURL: `${api.baseUrl}/v1`,
      maxRetries: 0,
    });
  });

  afterAll(async () => {
    await api.close();
  });

  /** How often the API answered a route with a status, from its own Prometheus histogram. */
  async function served(method: string, route: string, status: number): Promise<number> {
    const text = await (await fetch(`${api.baseUrl}/metrics`)).text();
    const line = text
      .split('\n')
      .find(
        (l) =>
          l.startsWith('lorafleet_http_request_duration_seconds_count{') &&
          l.includes(`method="${method}"`) &&
          l.includes(`route="${route}"`) &&
          l.includes(`status_code="${status}"`),
      );
    return line ? Number(line.split(' ').pop()) : 0;
  }

  it('uploads a file, creates, retrieves, lists, pages and cancels jobs', async () => {
    const file = await uploadTrainingFile(client);
    expect(file).toMatchObject({
      object: 'file',
      purpose: 'fine-tune',
      filename: 'train.jsonl',
      status: 'processed',
      bytes: GOOD_JSONL.length,
    });
    expect((await client.files.retrieve(file.id)).id).toBe(file.id);
    const listed: string[] = [];
    for await (const f of client.files.list()) listed.push(f.id);
    expect(listed).toContain(file.id);
    expect(await (await client.files.content(file.id)).text()).toBe(GOOD_JSONL);

    const models = [];
    for await (const m of client.models.list()) models.push(m.id);
    expect(models).toContain('tiny-random-gpt2');
    expect((await client.models.retrieve('tiny-random-gpt2')).object).toBe('model');

    const job = await client.fineTuning.jobs.create({
      model: 'tiny-random-gpt2',
      training_file: file.id,
      suffix: 'sdk',
      seed: 7,
      metadata: { via: 'openai-node' },
      method: {
        type: 'supervised',
        supervised: { hyperparameters: { n_epochs: 2, batch_size: 1 } },
      },
    });
    expect(job).toMatchObject({
      object: 'fine_tuning.job',
      status: 'queued',
      model: 'tiny-random-gpt2',
      training_file: file.id,
      seed: 7,
      metadata: { via: 'openai-node' },
      hyperparameters: { n_epochs: 2, batch_size: 1, learning_rate_multiplier: 1 },
      fine_tuned_model: null,
      finished_at: null,
    });

    const retrieved = await client.fineTuning.jobs.retrieve(job.id);
    expect(retrieved).toMatchObject({ id: job.id, status: 'queued' });

    // More jobs than one page holds: auto-pagination follows `after` cursors to the end.
    const ids = [job.id];
    for (let i = 0; i < 4; i++) {
      ids.push(
        (await client.fineTuning.jobs.create({ model: 'tiny-random-gpt2', training_file: file.id }))
          .id,
      );
    }
    const paged: string[] = [];
    for await (const j of client.fineTuning.jobs.list({ limit: 2 })) paged.push(j.id);
    expect(paged).toEqual([...ids].reverse());
    const firstPage = await client.fineTuning.jobs.list({ limit: 2 });
    expect(firstPage.data).toHaveLength(2);
    expect(firstPage.hasNextPage()).toBe(true);
    const filtered = await client.fineTuning.jobs.list({ metadata: { via: 'openai-node' } });
    expect(filtered.data.map((j) => j.id)).toEqual([job.id]);

    const events = [];
    for await (const e of client.fineTuning.jobs.listEvents(job.id, { limit: 1 })) events.push(e);
    expect(events.map((e) => e.object)).toEqual(['fine_tuning.job.event', 'fine_tuning.job.event']);
    expect(events.map((e) => e.message)).toEqual([
      'Fine-tuning job queued',
      'Validating training file',
    ]);
    expect(events[0]).toMatchObject({ level: 'info', type: 'status' });

    const cancelled = await client.fineTuning.jobs.cancel(ids[1]);
    expect(cancelled).toMatchObject({ id: ids[1], status: 'cancelled' });
    expect(cancelled.finished_at).toEqual(expect.any(Number));
    expect((await client.fineTuning.jobs.retrieve(ids[1])).status).toBe('cancelled');
  });

  it('lists checkpoints, following cursors page by page', async () => {
    const file = await uploadTrainingFile(client);
    const job = await client.fineTuning.jobs.create({
      model: 'tiny-random-gpt2',
      training_file: file.id,
    });
    expect((await client.fineTuning.jobs.checkpoints.list(job.id)).data).toEqual([]);

    // Checkpoints are written by workers; write three the way a worker does, fenced.
    const claim = await new AttemptsRepository(api.dataSource).claimAttempt(
      job.id,
      'sdk-test-worker',
      'cpu',
    );
    for (const step of [10, 20, 30]) {
      await api.dataSource.query(
        `INSERT INTO checkpoints (id, job_id, attempt, step, metrics, blob, bytes)
         VALUES ($1, $2, $3, $4, $5::jsonb, $6, 3)`,
        [
          `ftckpt-${job.id}-${step}`,
          job.id,
          claim!.attempt,
          step,
          JSON.stringify({ train_loss: 1 / step }),
          Buffer.from('abc'),
        ],
      );
    }
    const checkpoints = [];
    for await (const c of client.fineTuning.jobs.checkpoints.list(job.id, { limit: 2 })) {
      checkpoints.push(c);
    }
    expect(checkpoints.map((c) => c.step_number)).toEqual([30, 20, 10]);
    expect(checkpoints[0]).toMatchObject({
      object: 'fine_tuning.job.checkpoint',
      fine_tuning_job_id: job.id,
      metrics: { train_loss: 1 / 30 },
    });
    expect(checkpoints[0].fine_tuned_model_checkpoint).toMatch(/:ckpt-step-30$/);
  });

  it('raises the client error classes with OpenAI error bodies, without pointless retries', async () => {
    const missing = await client.fineTuning.jobs.retrieve('ftjob-nope').catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(OpenAI.NotFoundError);
    expect(missing).toMatchObject({ status: 404, code: 'not_found', param: 'fine_tuning_job_id' });

    const file = await uploadTrainingFile(client);
    const job = await client.fineTuning.jobs.create({
      model: 'tiny-random-gpt2',
      training_file: file.id,
    });
    // Another tenant's job does not exist for it (R19).
    await expect(other.fineTuning.jobs.cancel(job.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    await client.fineTuning.jobs.cancel(job.id);
    // A second cancel conflicts. The client retries 409s unless told not to; a state
    // conflict never heals by retrying, so the API says `x-should-retry: false`.
    const before = await served('POST', '/v1/fine_tuning/jobs/:id/cancel', 409);
    const conflict = await client.fineTuning.jobs.cancel(job.id).catch((e: unknown) => e);
    expect(conflict).toBeInstanceOf(OpenAI.ConflictError);
    expect(conflict).toMatchObject({ status: 409, code: 'invalid_state' });
    expect((await served('POST', '/v1/fine_tuning/jobs/:id/cancel', 409)) - before).toBe(1);

    const invalid = await client.fineTuning.jobs
      .create({
        model: 'tiny-random-gpt2',
        training_file: file.id,
        hyperparameters: { n_epochs: 0 },
      })
      .catch((e: unknown) => e);
    expect(invalid).toBeInstanceOf(OpenAI.BadRequestError);
    expect(invalid).toMatchObject({
      param: 'hyperparameters.n_epochs',
      type: 'invalid_request_error',
    });

    const unknownModel = await client.fineTuning.jobs
      .create({ model: 'no-such-model', training_file: file.id })
      .catch((e: unknown) => e);
    expect(unknownModel).toBeInstanceOf(OpenAI.NotFoundError);
    expect(unknownModel).toMatchObject({ code: 'model_not_found', param: 'model' });

    // OpenAI's `method` shapes as the client sends them: a preference file for a supervised
    // job, DPO (created; tests/e2e trains one on a worker) and reinforcement.
    const pairs = await client.files.create({
      file: await toFile(Buffer.from(PREFERENCE_JSONL), 'pairs.jsonl'),
      purpose: 'fine-tune',
    });
    expect(pairs).toMatchObject({ status: 'processed', kind: 'preference' });
    const mismatch = await client.fineTuning.jobs
      .create({ model: 'tiny-random-gpt2', training_file: pairs.id })
      .catch((e: unknown) => e);
    expect(mismatch).toBeInstanceOf(OpenAI.BadRequestError);
    expect(mismatch).toMatchObject({ code: 'invalid_file', param: 'training_file' });
    const dpo = await client.fineTuning.jobs.create({
      model: 'tiny-random-gpt2',
      training_file: pairs.id,
      method: { type: 'dpo', dpo: { hyperparameters: { beta: 0.1 } } },
    });
    expect(dpo).toMatchObject({
      status: 'queued',
      method: { type: 'dpo', dpo: { hyperparameters: { beta: 0.1 } } },
    });
    await client.fineTuning.jobs.cancel(dpo.id);
    const reinforcement = await client.fineTuning.jobs
      .create({
        model: 'tiny-random-gpt2',
        training_file: file.id,
        method: {
          type: 'reinforcement',
          reinforcement: {
            grader: {
              type: 'string_check',
              name: 'exact',
              input: '{{sample.output_text}}',
              reference: '{{item.answer}}',
              operation: 'eq',
            },
          },
        },
      })
      .catch((e: unknown) => e);
    expect(reinforcement).toBeInstanceOf(OpenAI.BadRequestError);
    expect(reinforcement).toMatchObject({ param: 'method.type' });
    expect((reinforcement as Error).message).toMatch(/"reinforcement" is not supported/);

    const badKey = new OpenAI({ apiKey: 'lf-wrong', baseURL: `${api.baseUrl}/v1` });
    await expect(badKey.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
  });
});

/** The built worker (`npm test` builds it first) as a child process against `api`. */
function startWorker(api: ApiHarness): { child: ChildProcess; output: string[] } {
  const main = path.resolve(__dirname, '../../worker/dist/main.js');
  if (!existsSync(main)) {
    throw new Error(`${main} is missing: run "npm run build" first ("npm test" does)`);
  }
  const output: string[] = [];
  const child = spawn(process.execPath, [main], {
    env: {
      ...process.env,
      DATABASE_URL: api.env.DATABASE_URL,
      REDIS_URL: api.env.REDIS_URL,
      LORAFLEET_QUEUE_PREFIX: api.env.LORAFLEET_QUEUE_PREFIX,
      LORAFLEET_MODELS_DIR: MODELS_DIR,
      LORAFLEET_BACKEND: 'cpu',
      LORAFLEET_WORKER_ID: 'openai-client-worker',
      LORAFLEET_CONTROL_POLL_MS: '200',
      LORAFLEET_LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.on('data', (chunk: Buffer) => output.push(chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => output.push(chunk.toString()));
  return { child, output };
}

describe('official openai client with a real worker', () => {
  let api: ApiHarness;
  let client: OpenAI;
  let worker: { child: ChildProcess; output: string[] } | undefined;

  beforeAll(async () => {
    api = await startApi();
    const tenant = await api.tenants.createTenant('sdk-worker');
    client = new OpenAI({
      apiKey: (await api.apiKeys.issue(tenant.id)).plaintext,
      baseURL: `${api.baseUrl}/v1`,
    });
    worker = startWorker(api);
  });

  afterAll(async () => {
    const child = worker?.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    await api.close();
  });

  it('polls a job with jobs.retrieve until it succeeds, then reads its model, events and results', async () => {
    const file = await uploadTrainingFile(client);
    const created = await client.fineTuning.jobs.create({
      model: 'tiny-random-gpt2',
      training_file: file.id,
      suffix: 'polled',
      seed: 11,
      method: {
        type: 'supervised',
        supervised: { hyperparameters: { n_epochs: 1, batch_size: 1 } },
      },
      // lorafleet's extensions, as a client passes unknown body fields.
      ...({
        lora: { r: 2, alpha: 4, target_modules: ['c_attn'] },
        training: { max_steps: 3, max_seq_length: 32 },
      } as object),
    });

    // What a client does: retrieve until the status is terminal.
    const seen = new Set<string>();
    let job = created;
    const deadline = Date.now() + 90_000;
    while (!['succeeded', 'failed', 'cancelled'].includes(job.status)) {
      if (Date.now() > deadline || worker?.child.exitCode !== null) {
        throw new Error(
          `job ${job.id} still ${job.status} (seen: ${[...seen].join(', ')}); worker:\n${worker?.output.join('')}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
      job = await client.fineTuning.jobs.retrieve(created.id);
      seen.add(job.status);
    }
    expect(job).toMatchObject({
      id: created.id,
      status: 'succeeded',
      error: null,
      fine_tuned_model: expect.stringMatching(/^ft:tiny-random-gpt2:org-[^:]+:polled:ftjob-/),
      finished_at: expect.any(Number),
      trained_tokens: expect.any(Number),
    });
    // Succeeded means the whole run: step = total_steps.
    const progress = (job as unknown as { progress: Record<string, unknown> }).progress;
    expect(progress).toMatchObject({ step: 3, total_steps: 3, percent: 100 });
    expect(job.result_files).toHaveLength(1);

    // The fine-tuned model is listed and retrievable like any OpenAI model.
    const model = await client.models.retrieve(job.fine_tuned_model!);
    expect(model).toMatchObject({ id: job.fine_tuned_model, object: 'model' });

    const messages: string[] = [];
    for await (const event of client.fineTuning.jobs.listEvents(job.id, { limit: 5 })) {
      messages.push(event.message);
    }
    expect(messages[0]).toMatch(/^Fine-tuning job succeeded: ft:/);
    expect(messages).toContain('Fine-tuning job queued');
    expect(messages.some((m) => /^Fine-tuning job started \(attempt 1\)/.test(m))).toBe(true);

    const csv = await (await client.files.content(job.result_files[0])).text();
    expect(csv.split('\n')[0]).toMatch(/step/);
  });
});
