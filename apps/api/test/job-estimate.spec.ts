/**
 * `POST /v1/fine_tuning/jobs/estimate` (issue 20 item 3) against the real Postgres and Redis:
 * the same 4xx as create for the same bad body, the trainer's own token and step figures
 * (over preference pairs for DPO), wall times from the speeds workers recorded for the job's
 * method (null with a reason where none exists), the memory fit per backend, the tenant's
 * quota, and nothing created.
 */
import {
  estimateFineTuneRun,
  loadTokenizer,
  parseJsonlExamples,
  parsePreferenceJsonl,
  readModelFacts,
  resolveFineTuneSpec,
} from '@lorafleet/data';
import { WorkersRepository } from '@lorafleet/db';
import path from 'node:path';
import {
  Client,
  GOOD_JSONL,
  MODELS_DIR,
  PREFERENCE_JSONL,
  startApi,
  type ApiHarness,
} from './api-harness';

jest.setTimeout(60_000);

const MODEL = 'tiny-random-gpt2';
const ESTIMATE = '/v1/fine_tuning/jobs/estimate';
const CREATE = '/v1/fine_tuning/jobs';

describe('job estimate', () => {
  let api: ApiHarness;
  let alice: Client;
  let bob: Client;
  let fileId: string;
  let preferenceFile: string;
  let bobFile: string;

  beforeAll(async () => {
    api = await startApi({ LORAFLEET_MAX_ACTIVE_JOBS_PER_TENANT: '2' });
    const a = await api.tenants.createTenant('alice');
    const b = await api.tenants.createTenant('bob');
    alice = new Client(api.baseUrl, (await api.apiKeys.issue(a.id)).plaintext);
    bob = new Client(api.baseUrl, (await api.apiKeys.issue(b.id)).plaintext);
    fileId = (await alice.upload(GOOD_JSONL)).body.id as string;
    preferenceFile = (await alice.upload(PREFERENCE_JSONL, 'pairs.jsonl')).body.id as string;
    bobFile = (await bob.upload(GOOD_JSONL)).body.id as string;
  });

  afterAll(async () => {
    await api?.close();
  });

  const body = (extra: Record<string, unknown> = {}) => ({
    model: MODEL,
    training_file: fileId,
    hyperparameters: { n_epochs: 3, batch_size: 2 },
    training: { max_seq_length: 32 },
    ...extra,
  });
  const count = async (table: string) =>
    Number(
      (await api.dataSource.query<{ n: string }[]>(`SELECT count(*) AS n FROM ${table}`))[0].n,
    );

  it('answers every bad body with create’s own 4xx, and creates nothing', async () => {
    const bad: Record<string, unknown>[] = [
      { training_file: fileId },
      body({ hyperparameters: { n_epochs: 0 } }),
      body({ lora: { r: 100000 } }),
      body({ bogus: true }),
      body({ training_file: 'file-missing' }),
      body({ training_file: bobFile }),
      body({ model: 'no-such-model' }),
      body({ model: '../etc' }),
      body({ training_file: preferenceFile }),
      body({ lora: { target_modules: ['q_proj'] } }),
      body({ training: { max_seq_length: 4096 } }),
      body({ hyperparameters: undefined, method: { type: 'reinforcement', reinforcement: {} } }),
      body({
        method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 1 } } },
      }),
    ];
    for (const request of bad) {
      const estimate = await alice.request('POST', ESTIMATE, request);
      const create = await alice.request('POST', CREATE, request);
      expect(estimate.status).toBeGreaterThanOrEqual(400);
      expect(estimate.status).toBeLessThan(500);
      expect({ status: estimate.status, body: estimate.body }).toEqual({
        status: create.status,
        body: create.body,
      });
      expect(estimate.body.error).toEqual({
        message: expect.any(String),
        type: expect.any(String),
        param: create.body.error.param,
        code: create.body.error.code,
      });
    }
    const malformed = await fetch(`${api.baseUrl}${ESTIMATE}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${alice.apiKey}`, 'content-type': 'application/json' },
      body: '{"model":',
    });
    expect(malformed.status).toBe(400);
    expect((await fetch(`${api.baseUrl}${ESTIMATE}`, { method: 'POST' })).status).toBe(401);
    expect(await count('fine_tuning_jobs')).toBe(0);
    expect(await count('outbox')).toBe(0);
  });

  it('answers the trainer’s tokens, steps and memory, wall time per live backend, and the quota', async () => {
    const workers = new WorkersRepository(api.dataSource);
    const register = (id: string, backend: string, memoryLimitMb: number | null) =>
      workers.register({
        id,
        host: 'h',
        pid: 1,
        backend,
        device: null,
        versions: null,
        memoryLimitMb,
      });
    await register('w-blas', 'wasm-blas', 4000);
    await register('w-gpu', 'webgpu', 1);
    for (const tokensPerSecond of [90, 110, 100]) {
      await workers.recordThroughput({
        baseModel: MODEL,
        method: 'supervised',
        backend: 'wasm-blas',
        workerId: 'w-blas',
        jobId: 'ftjob-earlier',
        attempt: 1,
        tokensPerSecond,
        trainedTokens: 1000,
      });
    }

    const response = await alice.request('POST', ESTIMATE, body());
    expect(response.status).toBe(200);
    const estimate = response.body;

    // The trainer's own figures: its tokenizer, truncation and loss mask (libs/data).
    const modelDir = path.join(MODELS_DIR, MODEL);
    const spec = resolveFineTuneSpec(
      { hyperparameters: { n_epochs: 3, batch_size: 2 }, training: { max_seq_length: 32 } },
      { model: MODEL, contextLength: 64, trainingExamples: 3 },
    );
    const expected = estimateFineTuneRun(
      parseJsonlExamples(GOOD_JSONL),
      await loadTokenizer(modelDir),
      spec,
      readModelFacts(modelDir).trainingShape,
    );
    expect(estimate).toMatchObject({
      object: 'fine_tuning.job.estimate',
      model: MODEL,
      training_file: fileId,
      method: 'supervised',
      hyperparameters: { n_epochs: 3, batch_size: 2, learning_rate_multiplier: 1 },
      examples: 3,
      trained_tokens_per_epoch: expected.tokensPerEpoch,
      trained_tokens: 3 * expected.tokensPerEpoch,
      trained_tokens_exact: true,
      target_tokens: 3 * expected.targetTokensPerEpoch,
      steps_per_epoch: 2,
      total_steps: 6,
      epochs: 3,
      estimated_peak_memory_mb: Math.ceil(expected.memory.totalBytes / 2 ** 20),
    });
    expect(estimate.trained_tokens_per_epoch).toBeGreaterThan(estimate.target_tokens_per_epoch);
    expect(estimate.backends).toEqual([
      {
        backend: 'wasm-blas',
        workers: 1,
        memory_limit_mb: 4000,
        fits_memory: true,
        tokens_per_second: 100,
        samples: 3,
        estimated_seconds: Math.ceil(estimate.trained_tokens / 100),
        reason: null,
      },
      {
        backend: 'webgpu',
        workers: 1,
        memory_limit_mb: 1,
        fits_memory: false,
        tokens_per_second: null,
        samples: 0,
        estimated_seconds: null,
        reason: expect.stringMatching(
          /more than the 1 MiB memory limit.*no tiny-random-gpt2 job has finished on webgpu yet/,
        ),
      },
    ]);
    expect(estimate.quota).toEqual({
      fits: true,
      rule: 'max_active_jobs_per_tenant',
      limit: 2,
      active_jobs: 0,
      message: null,
    });
    expect(await count('fine_tuning_jobs')).toBe(0);

    // max_steps inside an epoch: the trainer's cap, and a prorated token figure.
    const capped = await alice.request('POST', ESTIMATE, body({ training: { max_steps: 3 } }));
    expect(capped.body).toMatchObject({ total_steps: 3, epochs: 1.5, trained_tokens_exact: false });

    // Fill the quota: the estimate says what create would answer.
    for (let i = 0; i < 2; i++)
      expect((await alice.request('POST', CREATE, body())).status).toBe(201);
    const full = await alice.request('POST', ESTIMATE, body());
    const refused = await alice.request('POST', CREATE, body());
    expect(refused.status).toBe(429);
    expect(full.body.quota).toEqual({
      fits: false,
      rule: 'max_active_jobs_per_tenant',
      limit: 2,
      active_jobs: 2,
      message: refused.body.error.message,
    });
    // Bob's quota is his own.
    const bobs = await bob.request('POST', ESTIMATE, body({ training_file: bobFile }));
    expect(bobs.body.quota).toMatchObject({ fits: true, active_jobs: 0 });
    expect(await count('fine_tuning_jobs')).toBe(2);
  });

  it('sizes a DPO body over its pairs, and prices it only with DPO speeds', async () => {
    const dpoBody = body({
      training_file: preferenceFile,
      hyperparameters: undefined,
      method: { type: 'dpo', dpo: { hyperparameters: { n_epochs: 2, batch_size: 2 } } },
    });
    // The earlier test registered a wasm-blas worker and recorded supervised speeds only;
    // a heartbeat keeps it live however long that test took.
    const workers = new WorkersRepository(api.dataSource);
    await workers.heartbeat('w-blas', 'idle', null);
    const response = await alice.request('POST', ESTIMATE, dpoBody);
    expect(response.status).toBe(200);
    const modelDir = path.join(MODELS_DIR, MODEL);
    const expected = estimateFineTuneRun(
      parsePreferenceJsonl(PREFERENCE_JSONL),
      await loadTokenizer(modelDir),
      resolveFineTuneSpec(
        {
          method: { type: 'dpo' },
          hyperparameters: { n_epochs: 2, batch_size: 2 },
          training: { max_seq_length: 32 },
        },
        { model: MODEL, contextLength: 64, trainingExamples: 3 },
      ),
      readModelFacts(modelDir).trainingShape,
    );
    expect(response.body).toMatchObject({
      method: 'dpo',
      examples: 3,
      trained_tokens_per_epoch: expected.tokensPerEpoch,
      trained_tokens: 2 * expected.tokensPerEpoch,
      steps_per_epoch: 2,
      total_steps: 4,
      estimated_peak_memory_mb: Math.ceil(expected.memory.totalBytes / 2 ** 20),
    });
    const dpoOn = (estimate: typeof response.body, backend: string) =>
      (estimate.backends as { backend: string }[]).find((b) => b.backend === backend);
    expect(dpoOn(response.body, 'wasm-blas')).toMatchObject({
      tokens_per_second: null,
      samples: 0,
      estimated_seconds: null,
      reason: expect.stringMatching(
        /no DPO job on tiny-random-gpt2 has finished on wasm-blas yet, so its DPO speed is unknown/,
      ),
    });

    await workers.recordThroughput({
      baseModel: MODEL,
      method: 'dpo',
      backend: 'wasm-blas',
      workerId: 'w-blas',
      jobId: 'ftjob-earlier-dpo',
      attempt: 1,
      tokensPerSecond: 40,
      trainedTokens: 1000,
    });
    const measured = (await alice.request('POST', ESTIMATE, dpoBody)).body;
    expect(dpoOn(measured, 'wasm-blas')).toMatchObject({
      tokens_per_second: 40,
      samples: 1,
      estimated_seconds: Math.ceil(measured.trained_tokens / 40),
      reason: null,
    });
    // The supervised estimate still reads only supervised speeds.
    const supervised = (await alice.request('POST', ESTIMATE, body())).body;
    expect(dpoOn(supervised, 'wasm-blas')).toMatchObject({ tokens_per_second: 100, samples: 3 });
  });
});
