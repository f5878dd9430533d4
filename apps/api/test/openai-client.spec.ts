/**
 * The official `openai` npm client (v6) against the API with only `baseURL` and `apiKey`
 * changed (DESIGN §4). Running a job to a terminal state needs a worker; the end-to-end
 * suite does that. Here: upload, create, retrieve, auto-paginated listing, events,
 * checkpoints, cancel, and the client's error classes.
 */
import { JobsRepository } from '@lorafleet/db';
import OpenAI, { toFile } from 'openai';
import { GOOD_JSONL, startApi, type ApiHarness } from './api-harness';

jest.setTimeout(40_000);

describe('official openai client', () => {
  let api: ApiHarness;
  let client: OpenAI;
  let other: OpenAI;

  beforeAll(async () => {
    api = await startApi({ LORAFLEET_MAX_ACTIVE_JOBS_PER_TENANT: '50' });
    const tenant = await api.tenants.createTenant('sdk');
    const key = (await api.tenants.issueApiKey(tenant.id)).plaintext;
    client = new OpenAI({ apiKey: key, baseURL: `${api.baseUrl}/v1` });
    const stranger = await api.tenants.createTenant('stranger');
    other = new OpenAI({
      apiKey: (await api.tenants.issueApiKey(stranger.id)).plaintext,
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
    const file = await client.files.create({
      file: await toFile(Buffer.from(GOOD_JSONL), 'train.jsonl'),
      purpose: 'fine-tune',
    });
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
    const file = await client.files.create({
      file: await toFile(Buffer.from(GOOD_JSONL), 'train.jsonl'),
      purpose: 'fine-tune',
    });
    const job = await client.fineTuning.jobs.create({
      model: 'tiny-random-gpt2',
      training_file: file.id,
    });
    expect((await client.fineTuning.jobs.checkpoints.list(job.id)).data).toEqual([]);

    // Checkpoints are written by workers; write three the way a worker does, fenced.
    const jobs = new JobsRepository(api.dataSource);
    const claim = await jobs.claimAttempt(job.id, 'sdk-test-worker', 'cpu');
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

    const file = await client.files.create({
      file: await toFile(Buffer.from(GOOD_JSONL), 'train.jsonl'),
      purpose: 'fine-tune',
    });
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

    const badKey = new OpenAI({ apiKey: 'lf-wrong', baseURL: `${api.baseUrl}/v1` });
    await expect(badKey.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
  });
});
