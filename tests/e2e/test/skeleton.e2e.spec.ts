/**
 * The walking skeleton, all real: the built api and worker run as separate processes against
 * the real Postgres and Redis. A JSONL upload becomes a job, the job goes through the outbox
 * and BullMQ to the worker, the worker's child process trains a LoRA adapter with tfjs on the
 * tiny shipped model, and the adapter bytes land in Postgres.
 */
import {
  AdaptersRepository,
  ApiKeysRepository,
  TenantsRepository,
  createDataSource,
  runMigrations,
} from '@lorafleet/db';
import { readSafetensors } from '@lorafleet/lora-core';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { DataSource } from 'typeorm';
import {
  AppProcess,
  REPO_ROOT,
  deleteQueueKeys,
  waitFor,
  createScratchDatabase,
  type ScratchDatabase,
  freePort,
} from '@lorafleet/testing';

jest.setTimeout(180_000);

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

interface JobBody {
  id: string;
  status: string;
  fine_tuned_model: string | null;
  adapter_id: string | null;
  trained_tokens: number | null;
  error: unknown;
  progress: { step: number; total_steps: number | null };
  backend: string | null;
}

describe('walking skeleton: REST → queue → worker → adapter', () => {
  let scratch: ScratchDatabase;
  let dataSource: DataSource;
  let api: AppProcess;
  let worker: AppProcess;
  let baseUrl: string;
  let apiKey: string;
  const queuePrefix = `lf-e2e-${randomBytes(4).toString('hex')}`;

  beforeAll(async () => {
    scratch = await createScratchDatabase('lorafleet_e2e');
    dataSource = createDataSource({ url: scratch.url });
    await dataSource.initialize();
    await runMigrations(dataSource);
    const tenant = await new TenantsRepository(dataSource).createTenant('e2e');
    apiKey = (await new ApiKeysRepository(dataSource).issue(tenant.id)).plaintext;

    const port = await freePort();
    baseUrl = `http://127.0.0.1:${port}`;
    const env = {
      DATABASE_URL: scratch.url,
      REDIS_URL,
      LORAFLEET_MODELS_DIR: path.join(REPO_ROOT, 'models'),
      LORAFLEET_QUEUE_PREFIX: queuePrefix,
      LORAFLEET_MIN_EXAMPLES: '4',
    };
    api = new AppProcess('api', {
      ...env,
      PORT: String(port),
      HOST: '127.0.0.1',
      LORAFLEET_OUTBOX_POLL_MS: '200',
    });
    worker = new AppProcess('worker', {
      ...env,
      LORAFLEET_BACKEND: 'cpu',
      LORAFLEET_WORKER_ID: 'e2e-worker',
    });
    await waitFor(
      'api /readyz',
      async () => ((await fetch(`${baseUrl}/readyz`)).ok ? true : undefined),
      60_000,
    );
  });

  afterAll(async () => {
    await Promise.all([api?.stop(), worker?.stop()]);
    await dataSource?.destroy();
    await scratch?.drop();
    await deleteQueueKeys(REDIS_URL, queuePrefix);
  });

  const call = async (method: string, route: string, body?: unknown) => {
    const response = await fetch(`${baseUrl}${route}`, {
      method,
      headers: {
        authorization: `Bearer ${apiKey}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  };

  it('trains and stores a PEFT adapter, writing one status event per transition', async () => {
    const lines = [
      { prompt: 'Say hi: ', completion: 'hi' },
      { prompt: 'Say yes: ', completion: 'yes' },
      { prompt: 'Say no: ', completion: 'no' },
      { prompt: 'Say ok: ', completion: 'ok' },
    ];
    const jsonl = lines.map((line) => JSON.stringify(line)).join('\n') + '\n';
    const form = new FormData();
    form.append('purpose', 'fine-tune');
    form.append('file', new Blob([jsonl], { type: 'application/jsonl' }), 'train.jsonl');
    const upload = await fetch(`${baseUrl}/v1/files`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}` },
      body: form,
    });
    const file = (await upload.json()) as {
      id: string;
      status: string;
      status_details: string | null;
    };
    expect(upload.status).toBe(200);
    expect(file).toMatchObject({ status: 'processed', status_details: null });

    const created = await call('POST', '/v1/fine_tuning/jobs', {
      model: 'tiny-random-gpt2',
      training_file: file.id,
      suffix: 'skeleton',
      seed: 7,
      hyperparameters: { n_epochs: 2, batch_size: 2 },
      lora: { r: 4, alpha: 8 },
      training: { max_seq_length: 32, max_steps: 3 },
    });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({
      object: 'fine_tuning.job',
      status: 'queued',
      model: 'tiny-random-gpt2',
    });
    const jobId = created.body.id as string;

    const finished = await waitFor(
      'job to finish',
      async () => {
        const { body } = await call('GET', `/v1/fine_tuning/jobs/${jobId}`);
        const job = body as unknown as JobBody;
        return ['succeeded', 'failed', 'cancelled'].includes(job.status) ? job : undefined;
      },
      150_000,
      500,
    );
    if (finished.status !== 'succeeded') {
      throw new Error(
        `job ended ${finished.status}: ${JSON.stringify(finished.error)}\n${worker.output.join('')}`,
      );
    }
    expect(finished.fine_tuned_model).toBe(
      `ft:tiny-random-gpt2:${created.body.organization_id as string}:skeleton:${jobId}`,
    );
    expect(finished.progress).toMatchObject({ step: 3, total_steps: 3 });
    expect(finished.trained_tokens).toBeGreaterThan(0);
    expect(finished.backend).toBe('cpu');

    const events = await call('GET', `/v1/fine_tuning/jobs/${jobId}/events?limit=100`);
    const statuses = (events.body.data as { type: string; data: { status?: string } }[])
      .filter((e) => e.type === 'status')
      .map((e) => e.data.status)
      .reverse();
    expect(statuses).toEqual(['validating_files', 'queued', 'running', 'succeeded']);

    const adapterBytes = await new AdaptersRepository(dataSource).getWeights(
      created.body.organization_id as string,
      finished.adapter_id!,
    );
    const adapter = readSafetensors(new Uint8Array(adapterBytes!));
    expect(adapter.metadata).toEqual({ format: 'pt' });
    const keys = [...adapter.tensors.keys()].sort();
    expect(keys).toContain('base_model.model.transformer.h.0.attn.c_attn.lora_A.weight');
    expect(keys).toContain('base_model.model.transformer.h.0.attn.c_attn.lora_B.weight');
    // B starts at zero; after training it must have moved.
    const loraB = adapter.tensors.get(
      'base_model.model.transformer.h.0.attn.c_attn.lora_B.weight',
    )!;
    expect(loraB.shape[1]).toBe(4);
    expect(Math.max(...Array.from(loraB.data, Math.abs))).toBeGreaterThan(0);
  });

  it('rejects an unknown base model and a bad file with OpenAI-shaped errors', async () => {
    const unknownModel = await call('POST', '/v1/fine_tuning/jobs', {
      model: '../etc',
      training_file: 'file-x',
    });
    expect(unknownModel.status).toBe(404);
    expect(unknownModel.body).toMatchObject({ error: { code: 'model_not_found', param: 'model' } });

    const form = new FormData();
    form.append('purpose', 'fine-tune');
    form.append('file', new Blob(['{"prompt": 1}\nnot json\n']), 'bad.jsonl');
    const upload = await fetch(`${baseUrl}/v1/files`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}` },
      body: form,
    });
    const file = (await upload.json()) as { id: string; status: string; status_details: string };
    expect(file.status).toBe('error');
    expect(file.status_details).toMatch(/line 1/);
    expect(file.status_details).toMatch(/line 2/);
    const job = await call('POST', '/v1/fine_tuning/jobs', {
      model: 'tiny-random-gpt2',
      training_file: file.id,
    });
    expect(job.status).toBe(400);
    expect(job.body).toMatchObject({ error: { code: 'invalid_file', param: 'training_file' } });

    const noAuth = await fetch(`${baseUrl}/v1/fine_tuning/jobs`);
    expect(noAuth.status).toBe(401);
    expect(await noAuth.json()).toMatchObject({ error: { type: 'authentication_error' } });
  });
});
