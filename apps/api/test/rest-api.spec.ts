/**
 * The REST API against the real Postgres and Redis: every endpoint, its error paths, and
 * the promises R2, R3, R19–R22 (RELIABILITY.md).
 */
import {
  FINE_TUNE_JOB_NAME,
  LORAFLEET_VERSION,
  LineageSchema,
  QUEUE_NAMES,
  type Lineage,
} from '@lorafleet/contracts';
import { OutboxRepository } from '@lorafleet/db';
import { Queue } from 'bullmq';
import { createHash } from 'node:crypto';
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import {
  Client,
  GOOD_JSONL,
  MODELS_DIR,
  PREFERENCE_JSONL,
  startApi,
  until,
  type ApiHarness,
} from './api-harness';

jest.setTimeout(60_000);

describe('REST API', () => {
  let api: ApiHarness;
  let alice: Client;
  let bob: Client;
  let admin: Client;
  let queue: Queue;
  let fileId: string;

  beforeAll(async () => {
    api = await startApi({
      LORAFLEET_MAX_ACTIVE_JOBS_PER_TENANT: '6',
      LORAFLEET_UPLOAD_MAX_BYTES: '4096',
    });
    const a = await api.tenants.createTenant('alice');
    const b = await api.tenants.createTenant('bob');
    alice = new Client(api.baseUrl, (await api.apiKeys.issue(a.id)).plaintext);
    bob = new Client(api.baseUrl, (await api.apiKeys.issue(b.id)).plaintext);
    admin = new Client(
      api.baseUrl,
      (await api.apiKeys.issue(b.id, { isFleetAdmin: true })).plaintext,
    );
    queue = new Queue(QUEUE_NAMES.fineTune, {
      connection: { url: api.env.REDIS_URL },
      prefix: api.env.LORAFLEET_QUEUE_PREFIX,
    });
    fileId = (await alice.upload(GOOD_JSONL)).body.id;
  });

  afterAll(async () => {
    await queue.close();
    await api.close();
  });

  const jobBody = (extra: Record<string, unknown> = {}) => ({
    model: 'tiny-random-gpt2',
    training_file: fileId,
    hyperparameters: { n_epochs: 1 },
    ...extra,
  });

  describe('auth (R20)', () => {
    it('rejects missing, malformed and revoked keys with 401', async () => {
      expect((await new Client(api.baseUrl, '').request('GET', '/v1/files')).status).toBe(401);
      const wrong = await new Client(api.baseUrl, 'lf-not-a-key').request('GET', '/v1/files');
      expect(wrong.status).toBe(401);
      expect(wrong.body.error).toMatchObject({
        type: 'authentication_error',
        code: 'invalid_api_key',
      });
      const tenant = await api.tenants.createTenant('temp');
      const issued = await api.apiKeys.issue(tenant.id);
      const temp = new Client(api.baseUrl, issued.plaintext);
      expect((await temp.request('GET', '/v1/files')).status).toBe(200);
      await api.apiKeys.revoke(issued.apiKey.id);
      expect((await temp.request('GET', '/v1/files')).status).toBe(401);
    });

    it('GET job checks the key in the same query as the job: bad keys 401 first, revocation at once', async () => {
      const tenant = await api.tenants.createTenant('hot-path');
      const issued = await api.apiKeys.issue(tenant.id);
      const owner = new Client(api.baseUrl, issued.plaintext);
      const file = (await owner.upload(GOOD_JSONL)).body.id as string;
      const job = (
        await owner.request('POST', '/v1/fine_tuning/jobs', {
          model: 'tiny-random-gpt2',
          training_file: file,
        })
      ).body;
      const route = `/v1/fine_tuning/jobs/${job.id}`;
      const got = await owner.request('GET', route);
      expect(got.status).toBe(200);
      expect(got.body).toEqual(job);
      // The key is checked before the job: a bad key never learns whether the id exists.
      for (const key of ['', 'lf-not-a-key']) {
        for (const path of [route, '/v1/fine_tuning/jobs/ftjob-missing']) {
          const answer = await new Client(api.baseUrl, key).request('GET', path);
          expect({ key, path, status: answer.status, code: answer.body.error?.code }).toEqual({
            key,
            path,
            status: 401,
            code: 'invalid_api_key',
          });
        }
      }
      // Revoked: 401 on the very next request, on this route too (no key cache).
      await api.apiKeys.revoke(issued.apiKey.id);
      const revoked = await owner.request('GET', route);
      expect(revoked.status).toBe(401);
      expect(revoked.body.error).toMatchObject({ type: 'authentication_error' });
      // A NUL in the id is a 400, as on every other route.
      expect((await alice.request('GET', '/v1/fine_tuning/jobs/ftjob-%00x')).status).toBe(400);
    });

    it('GET job is never staler than Postgres: a row changed behind the API shows at once', async () => {
      const job = (await alice.request('POST', '/v1/fine_tuning/jobs', jobBody())).body;
      const route = `/v1/fine_tuning/jobs/${job.id}`;
      const first = await alice.request('GET', route);
      const etag = first.headers.get('etag')!;
      expect((await alice.request('GET', route, undefined, { 'If-None-Match': etag })).status).toBe(
        304,
      );
      await api.dataSource.query(
        'UPDATE fine_tuning_jobs SET progress_step = 2, progress_total_steps = 9 WHERE id = $1',
        [job.id],
      );
      const after = await alice.request('GET', route, undefined, { 'If-None-Match': etag });
      expect(after.status).toBe(200);
      expect(after.body.progress).toMatchObject({ step: 2, total_steps: 9 });
      expect(after.headers.get('etag')).not.toBe(etag);
    });
  });

  describe('files', () => {
    it('stores a valid file and serves it back', async () => {
      const upload = await alice.upload(GOOD_JSONL, 'good.jsonl');
      expect(upload.status).toBe(200);
      expect(upload.body).toMatchObject({
        object: 'file',
        purpose: 'fine-tune',
        status: 'processed',
        filename: 'good.jsonl',
      });
      const id = upload.body.id as string;
      expect((await alice.request('GET', `/v1/files/${id}`)).body).toMatchObject({
        id,
        bytes: GOOD_JSONL.length,
      });
      expect((await alice.request('GET', `/v1/files/${id}/content`)).body).toBe(
        GOOD_JSONL.trim().split('\n').length
          ? (await alice.request('GET', `/v1/files/${id}/content`)).body
          : '',
      );
      const content = await fetch(`${api.baseUrl}/v1/files/${id}/content`, {
        headers: { authorization: `Bearer ${alice.apiKey}` },
      });
      expect(await content.text()).toBe(GOOD_JSONL);
      const list = await alice.request('GET', '/v1/files');
      expect(list.body.data.map((f: { id: string }) => f.id)).toContain(id);
      expect((await alice.request('DELETE', `/v1/files/${id}`)).body).toEqual({
        id,
        object: 'file',
        deleted: true,
      });
      expect((await alice.request('GET', `/v1/files/${id}`)).status).toBe(404);
    });

    it('stores a bad file with status error and line-numbered details', async () => {
      const upload = await alice.upload('{"prompt":"a","completion":"b"}\n{"prompt": 3}\nnope\n');
      expect(upload.body.status).toBe('error');
      expect(upload.body.status_details).toMatch(/line 2/);
      expect(upload.body.status_details).toMatch(/line 3/);
      const job = await alice.request(
        'POST',
        '/v1/fine_tuning/jobs',
        jobBody({ training_file: upload.body.id }),
      );
      expect(job.status).toBe(400);
      expect(job.body.error).toMatchObject({ code: 'invalid_file', param: 'training_file' });
    });

    it('rejects uploads over the size limit with 413 (R21), a wrong purpose and a missing file', async () => {
      const big = await alice.upload('x'.repeat(5000));
      expect(big.status).toBe(413);
      expect(big.body.error.code).toBe('payload_too_large');
      const purpose = await alice.upload(GOOD_JSONL, 'a.jsonl', 'assistants');
      expect(purpose.status).toBe(400);
      expect(purpose.body.error.param).toBe('purpose');
      const form = new FormData();
      form.append('purpose', 'fine-tune');
      const missing = await fetch(`${api.baseUrl}/v1/files`, {
        method: 'POST',
        headers: { authorization: `Bearer ${alice.apiKey}` },
        body: form,
      });
      expect(missing.status).toBe(400);
      const notMultipart = await alice.request('POST', '/v1/files', { file: 'x' });
      expect(notMultipart.status).toBe(400);
    });
  });

  describe('models', () => {
    it('lists base models and resolves one', async () => {
      const list = await alice.request('GET', '/v1/models');
      expect(list.body.data.map((m: { id: string }) => m.id)).toContain('tiny-random-gpt2');
      expect((await alice.request('GET', '/v1/models/tiny-random-gpt2')).body).toMatchObject({
        object: 'model',
      });
      expect((await alice.request('GET', '/v1/models/nope')).status).toBe(404);
    });

    it("reports each shipped base model's architecture, parameters and context length (issue 16)", async () => {
      // The counts equal the tensors of each model.safetensors (libs/data model-parameters.spec).
      const expected = {
        'tiny-random-gpt2': { architecture: 'gpt2', parameters: 36_128, context_length: 64 },
        'lorafleet-tiny-llama': {
          architecture: 'llama',
          parameters: 2_885_888,
          context_length: 512,
        },
      };
      const list = await alice.request('GET', '/v1/models');
      for (const [id, facts] of Object.entries(expected)) {
        expect(list.body.data.find((m: { id: string }) => m.id === id)).toEqual({
          id,
          object: 'model',
          created: expect.any(Number) as number,
          owned_by: 'lorafleet',
          ...facts,
        });
        expect((await alice.request('GET', `/v1/models/${id}`)).body).toMatchObject(facts);
      }
    });

    it('rejects traversal, absolute paths, NUL bytes and escaping symlinks (R22)', async () => {
      const outside = path.join(tmpdir(), `lf-outside-${process.pid}`);
      mkdirSync(outside, { recursive: true });
      writeFileSync(path.join(outside, 'config.json'), '{"model_type":"gpt2"}');
      const link = path.join(MODELS_DIR, `escape-${process.pid}`);
      symlinkSync(outside, link);
      try {
        for (const model of [
          '../models/tiny-random-gpt2',
          '/etc',
          'tiny\u0000',
          `escape-${process.pid}`,
          'a/../../b',
          '..',
        ]) {
          const response = await alice.request('POST', '/v1/fine_tuning/jobs', jobBody({ model }));
          expect({ model, status: response.status, code: response.body.error?.code }).toEqual({
            model,
            status: 404,
            code: 'model_not_found',
          });
          expect(response.body.error.param).toBe('model');
        }
        const listed = await alice.request('GET', '/v1/models');
        expect(listed.body.data.map((m: { id: string }) => m.id)).not.toContain(
          `escape-${process.pid}`,
        );
      } finally {
        rmSync(link);
        rmSync(outside, { recursive: true });
      }
    });
  });

  describe('fine-tuning jobs', () => {
    it('creates a job with resolved hyperparameters, the learning-rate rule and LoRA defaults', async () => {
      const created = await alice.request('POST', '/v1/fine_tuning/jobs', {
        ...jobBody({ hyperparameters: { n_epochs: 'auto', learning_rate_multiplier: 2 } }),
        suffix: 'demo',
        metadata: { team: 'nlp' },
        lora: { r: 4 },
      });
      expect(created.status).toBe(201);
      expect(created.body).toMatchObject({
        object: 'fine_tuning.job',
        status: 'queued',
        model: 'tiny-random-gpt2',
        training_file: fileId,
        hyperparameters: { n_epochs: 25, batch_size: 1, learning_rate_multiplier: 2 },
        lora: { r: 4, alpha: 16, dropout: 0, use_rslora: false },
        metadata: { team: 'nlp' },
        progress: { step: 0 },
      });
      // multiplier 2 × 2e-4, resolved once into the stored spec and echoed as such.
      expect(created.body.training.learning_rate).toBeCloseTo(4e-4);
      const row = await api.dataSource.query('SELECT spec FROM fine_tuning_jobs WHERE id = $1', [
        created.body.id,
      ]);
      expect(created.body.method).toEqual({
        type: 'supervised',
        supervised: { hyperparameters: created.body.hyperparameters },
      });
      expect(row[0].spec).toEqual({
        seed: created.body.seed,
        method: { type: 'supervised' },
        hyperparameters: created.body.hyperparameters,
        lora: created.body.lora,
        training: created.body.training,
      });
      // The relay puts it on BullMQ with jobId = job id.
      const delivery = await until(
        'BullMQ job',
        async () => (await queue.getJob(created.body.id as string)) ?? undefined,
      );
      expect(delivery.name).toBe(FINE_TUNE_JOB_NAME);
      expect(delivery.data).toEqual({
        schemaVersion: 1,
        jobId: created.body.id,
        tenantId: created.body.organization_id,
      });
    });

    it('answers bad bodies with 400 naming the parameter', async () => {
      const cases: [unknown, string | null][] = [
        [{ training_file: fileId }, 'model'],
        [{ ...jobBody(), hyperparameters: { n_epochs: 0 } }, 'hyperparameters.n_epochs'],
        [{ ...jobBody(), lora: { r: 100000 } }, 'lora.r'],
        [{ ...jobBody(), bogus: true }, null],
        [{ ...jobBody(), training_file: 'file-missing' }, 'training_file'],
      ];
      for (const [body, param] of cases) {
        const response = await alice.request('POST', '/v1/fine_tuning/jobs', body);
        expect(response.status).toBe(400);
        expect(response.body.error.type).toBe('invalid_request_error');
        if (param) expect(response.body.error.param).toBe(param);
      }
      const badJson = await fetch(`${api.baseUrl}/v1/fine_tuning/jobs`, {
        method: 'POST',
        headers: { authorization: `Bearer ${alice.apiKey}`, 'content-type': 'application/json' },
        body: '{"model":',
      });
      expect(badJson.status).toBe(400);
      expect(((await badJson.json()) as { error: { message: string } }).error.message).toBeTruthy();
    });

    it('replays the same Idempotency-Key and body, rejects another body, and creates one job under concurrency (R2)', async () => {
      const key = `key-${Date.now()}`;
      const body = jobBody({ suffix: 'idem' });
      const responses = await Promise.all(
        Array.from({ length: 5 }, () =>
          alice.request('POST', '/v1/fine_tuning/jobs', body, { 'Idempotency-Key': key }),
        ),
      );
      expect(responses.every((r) => r.status === 201)).toBe(true);
      expect(new Set(responses.map((r) => r.body.id)).size).toBe(1);
      expect(responses.filter((r) => r.headers.get('idempotent-replayed') === 'true')).toHaveLength(
        4,
      );
      const altered = await alice.request(
        'POST',
        '/v1/fine_tuning/jobs',
        { ...body, suffix: 'other' },
        { 'Idempotency-Key': key },
      );
      expect(altered.status).toBe(422);
      const rows = await api.dataSource.query(
        'SELECT count(*)::int AS n FROM fine_tuning_jobs WHERE idempotency_key = $1',
        [key],
      );
      expect(rows[0].n).toBe(1);
      // The same key from another tenant is another job.
      const bobFile = (await bob.upload(GOOD_JSONL)).body.id as string;
      const bobs = await bob.request(
        'POST',
        '/v1/fine_tuning/jobs',
        { ...body, training_file: bobFile },
        { 'Idempotency-Key': key },
      );
      expect(bobs.status).toBe(201);
      expect(bobs.body.id).not.toBe(responses[0].body.id);
    });

    it('pages, filters and serves ETags', async () => {
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        ids.push(
          (
            await bob.request(
              'POST',
              '/v1/fine_tuning/jobs',
              jobBody({
                training_file: (await bob.upload(GOOD_JSONL)).body.id,
                metadata: { batch: 'paging' },
              }),
            )
          ).body.id,
        );
      }
      const page1 = await bob.request('GET', '/v1/fine_tuning/jobs?limit=2&metadata[batch]=paging');
      expect(page1.body.data.map((j: { id: string }) => j.id)).toEqual([ids[2], ids[1]]);
      expect(page1.body.has_more).toBe(true);
      const page2 = await bob.request(
        'GET',
        `/v1/fine_tuning/jobs?limit=2&metadata[batch]=paging&after=${ids[1]}`,
      );
      expect(page2.body.data.map((j: { id: string }) => j.id)).toEqual([ids[0]]);
      expect(page2.body.has_more).toBe(false);
      expect((await bob.request('GET', '/v1/fine_tuning/jobs?status=running')).body.data).toEqual(
        [],
      );
      expect((await bob.request('GET', '/v1/fine_tuning/jobs?status=bogus')).status).toBe(400);
      expect((await bob.request('GET', '/v1/fine_tuning/jobs?limit=1000')).status).toBe(400);

      const first = await bob.request('GET', `/v1/fine_tuning/jobs/${ids[0]}`);
      const etag = first.headers.get('etag')!;
      expect(etag).toMatch(/^W\/"/);
      expect(
        (
          await bob.request('GET', `/v1/fine_tuning/jobs/${ids[0]}`, undefined, {
            'If-None-Match': etag,
          })
        ).status,
      ).toBe(304);
      const listEtag = page1.headers.get('etag')!;
      expect(
        (
          await bob.request(
            'GET',
            '/v1/fine_tuning/jobs?limit=2&metadata[batch]=paging',
            undefined,
            { 'If-None-Match': listEtag },
          )
        ).status,
      ).toBe(304);
      await bob.request('POST', `/v1/fine_tuning/jobs/${ids[0]}/cancel`);
      expect(
        (
          await bob.request('GET', `/v1/fine_tuning/jobs/${ids[0]}`, undefined, {
            'If-None-Match': etag,
          })
        ).status,
      ).toBe(200);
    });

    it('cancels a queued job once, lists its status events, and refuses illegal control calls', async () => {
      const job = (await alice.request('POST', '/v1/fine_tuning/jobs', jobBody())).body;
      const cancelled = await alice.request('POST', `/v1/fine_tuning/jobs/${job.id}/cancel`);
      expect(cancelled.status).toBe(200);
      expect(cancelled.body).toMatchObject({ status: 'cancelled' });
      expect(cancelled.body.finished_at).toEqual(expect.any(Number));
      expect((await alice.request('POST', `/v1/fine_tuning/jobs/${job.id}/cancel`)).status).toBe(
        409,
      );
      expect((await alice.request('POST', `/v1/fine_tuning/jobs/${job.id}/pause`)).status).toBe(
        409,
      );
      expect((await alice.request('POST', `/v1/fine_tuning/jobs/${job.id}/resume`)).status).toBe(
        409,
      );
      const events = await alice.request('GET', `/v1/fine_tuning/jobs/${job.id}/events`);
      expect(events.body.data.map((e: { data: { status: string } }) => e.data.status)).toEqual([
        'cancelled',
        'queued',
        'validating_files',
      ]);
      expect(events.body.data[0]).toMatchObject({
        object: 'fine_tuning.job.event',
        type: 'status',
        level: 'info',
      });
      const page = await alice.request(
        'GET',
        `/v1/fine_tuning/jobs/${job.id}/events?limit=1&after=${events.body.data[0].id}`,
      );
      expect(page.body.data.map((e: { id: string }) => e.id)).toEqual([events.body.data[1].id]);
      expect(page.body.has_more).toBe(true);
      expect(
        (await alice.request('GET', `/v1/fine_tuning/jobs/${job.id}/checkpoints`)).body,
      ).toEqual({
        object: 'list',
        data: [],
        has_more: false,
      });
    });

    it('limits active jobs per tenant with 429 (R21)', async () => {
      const tenant = await api.tenants.createTenant('busy');
      const busy = new Client(api.baseUrl, (await api.apiKeys.issue(tenant.id)).plaintext);
      const file = (await busy.upload(GOOD_JSONL)).body.id as string;
      for (let i = 0; i < 6; i++) {
        expect(
          (await busy.request('POST', '/v1/fine_tuning/jobs', jobBody({ training_file: file })))
            .status,
        ).toBe(201);
      }
      const over = await busy.request(
        'POST',
        '/v1/fine_tuning/jobs',
        jobBody({ training_file: file }),
      );
      expect(over.status).toBe(429);
      expect(over.body.error.type).toBe('rate_limit_error');
    });
  });

  describe('methods and file kinds', () => {
    let preferenceFile: string;
    const create = (body: Record<string, unknown>) =>
      alice.request('POST', '/v1/fine_tuning/jobs', body);
    const jobCount = async () =>
      Number(
        (
          await api.dataSource.query<{ n: string }[]>('SELECT count(*) AS n FROM fine_tuning_jobs')
        )[0].n,
      );

    beforeAll(async () => {
      preferenceFile = (await alice.upload(PREFERENCE_JSONL, 'pairs.jsonl')).body.id as string;
    });

    it('records which kind of data an upload holds', async () => {
      expect((await alice.request('GET', `/v1/files/${preferenceFile}`)).body).toMatchObject({
        status: 'processed',
        kind: 'preference',
      });
      expect((await alice.request('GET', `/v1/files/${fileId}`)).body).toMatchObject({
        status: 'processed',
        kind: 'sft',
      });
      const bad = await alice.upload('{"prompt": 3}\n');
      expect(bad.body).toMatchObject({ status: 'error', kind: null });
      const [row] = await api.dataSource.query<{ kind: string }[]>(
        'SELECT kind FROM files WHERE id = $1',
        [preferenceFile],
      );
      expect(row.kind).toBe('preference');
    });

    it("refuses files whose kind the method does not train, naming the file's parameter", async () => {
      const before = await jobCount();
      const cases: [Record<string, unknown>, string, RegExp][] = [
        // No method is supervised, as OpenAI's default.
        [jobBody({ training_file: preferenceFile }), 'training_file', /holds preference pairs/],
        [
          jobBody({ training_file: preferenceFile, method: { type: 'supervised' } }),
          'training_file',
          /"supervised" job trains on supervised examples/,
        ],
        [jobBody({ validation_file: preferenceFile }), 'validation_file', /preference pairs/],
        [
          jobBody({ hyperparameters: undefined, method: { type: 'dpo' } }),
          'training_file',
          /holds supervised examples.*"dpo" job trains on preference pairs/,
        ],
        [
          jobBody({
            hyperparameters: undefined,
            training_file: preferenceFile,
            validation_file: fileId,
            method: { type: 'dpo' },
          }),
          'validation_file',
          /holds supervised examples/,
        ],
      ];
      for (const [body, param, message] of cases) {
        const response = await create(body);
        expect({ status: response.status, param: response.body.error?.param }).toEqual({
          status: 400,
          param,
        });
        expect(response.body.error).toMatchObject({ code: 'invalid_file' });
        expect(response.body.error.message).toMatch(message);
      }
      expect(await jobCount()).toBe(before);
    });

    it('validates a file stored before kinds were recorded again, and records its kind', async () => {
      const old = (await alice.upload(PREFERENCE_JSONL, 'old-pairs.jsonl')).body.id as string;
      await api.dataSource.query('UPDATE files SET kind = NULL WHERE id = $1', [old]);
      expect((await alice.request('GET', `/v1/files/${old}`)).body.kind).toBeNull();
      const response = await create(jobBody({ training_file: old }));
      expect(response.status).toBe(400);
      expect(response.body.error).toMatchObject({ code: 'invalid_file', param: 'training_file' });
      expect((await alice.request('GET', `/v1/files/${old}`)).body.kind).toBe('preference');
    });

    it('creates a DPO job with its β in the spec, echoed as OpenAI does', async () => {
      const dpo = await create(
        jobBody({
          hyperparameters: undefined,
          training_file: preferenceFile,
          method: { type: 'dpo', dpo: { hyperparameters: { beta: 0.2, n_epochs: 2 } } },
        }),
      );
      expect(dpo.status).toBe(201);
      expect(dpo.body).toMatchObject({
        status: 'queued',
        training_file: preferenceFile,
        method: { type: 'dpo', dpo: { hyperparameters: { beta: 0.2, n_epochs: 2 } } },
      });
      const [row] = await api.dataSource.query<{ spec: { method: unknown } }[]>(
        'SELECT spec FROM fine_tuning_jobs WHERE id = $1',
        [dpo.body.id],
      );
      expect(row.spec.method).toEqual({ type: 'dpo', beta: 0.2 });
      // β left out is 0.1, TRL's and OpenAI's default.
      const defaulted = await create(
        jobBody({
          hyperparameters: undefined,
          training_file: preferenceFile,
          method: { type: 'dpo' },
        }),
      );
      expect(defaulted.status).toBe(201);
      expect(defaulted.body.method.dpo.hyperparameters.beta).toBe(0.1);
      for (const id of [dpo.body.id, defaulted.body.id] as string[])
        expect((await alice.request('POST', `/v1/fine_tuning/jobs/${id}/cancel`)).status).toBe(200);
    });

    it('answers reinforcement with a 400 naming the method, and bad DPO settings naming the field', async () => {
      const before = await jobCount();
      const reinforcement = await create(
        jobBody({
          hyperparameters: undefined,
          method: { type: 'reinforcement', reinforcement: { grader: { type: 'string_check' } } },
        }),
      );
      expect(reinforcement.status).toBe(400);
      expect(reinforcement.body.error).toMatchObject({
        type: 'invalid_request_error',
        param: 'method.type',
      });
      expect(reinforcement.body.error.message).toMatch(/"reinforcement" is not supported/);
      const unknown = await create(jobBody({ method: { type: 'ppo' } }));
      expect(unknown.status).toBe(400);
      expect(unknown.body.error.param).toBe('method.type');
      const badBeta = await create(
        jobBody({
          hyperparameters: undefined,
          training_file: preferenceFile,
          method: { type: 'dpo', dpo: { hyperparameters: { beta: -1 } } },
        }),
      );
      expect(badBeta.status).toBe(400);
      expect(badBeta.body.error.param).toBe('method.dpo.hyperparameters.beta');
      const conflict = await create(
        jobBody({
          training_file: preferenceFile,
          hyperparameters: { n_epochs: 1 },
          method: { type: 'dpo', dpo: { hyperparameters: { n_epochs: 2, beta: 0.1 } } },
        }),
      );
      expect(conflict.status).toBe(400);
      expect(conflict.body.error.param).toBe('method.dpo.hyperparameters');
      expect(await jobCount()).toBe(before);
    });
  });

  describe('tenancy (R19)', () => {
    it("answers 404 for every one of another tenant's things and changes nothing", async () => {
      const job = (await alice.request('POST', '/v1/fine_tuning/jobs', jobBody())).body;
      const adapterId = 'adapter-doesnotmatter';
      const probes: [string, string][] = [
        ['GET', `/v1/files/${fileId}`],
        ['GET', `/v1/files/${fileId}/content`],
        ['DELETE', `/v1/files/${fileId}`],
        ['GET', `/v1/fine_tuning/jobs/${job.id}`],
        ['GET', `/v1/fine_tuning/jobs/${job.id}/events`],
        ['GET', `/v1/fine_tuning/jobs/${job.id}/checkpoints`],
        ['POST', `/v1/fine_tuning/jobs/${job.id}/cancel`],
        ['POST', `/v1/fine_tuning/jobs/${job.id}/pause`],
        ['POST', `/v1/fine_tuning/jobs/${job.id}/resume`],
        ['GET', `/v1/adapters/${adapterId}`],
        ['GET', `/v1/adapters/${adapterId}/archive`],
      ];
      for (const [method, route] of probes) {
        expect({ route, method, status: (await bob.request(method, route)).status }).toEqual({
          route,
          method,
          status: 404,
        });
      }
      const creating = await bob.request('POST', '/v1/fine_tuning/jobs', jobBody());
      expect(creating.status).toBe(400);
      expect(creating.body.error.param).toBe('training_file');
      expect((await alice.request('GET', `/v1/fine_tuning/jobs/${job.id}`)).body.status).toBe(
        'queued',
      );
      expect((await alice.request('GET', `/v1/files/${fileId}`)).status).toBe(200);
      const list = await bob.request('GET', '/v1/fine_tuning/jobs?limit=100');
      expect(list.body.data.map((j: { id: string }) => j.id)).not.toContain(job.id);
    });
  });

  describe('adapters and fine-tuned models', () => {
    it('serves the PEFT files, the archive, the ft: model and deletes it', async () => {
      // Store an adapter the way a worker does: claim an attempt, complete it fenced.
      const job = (await alice.request('POST', '/v1/fine_tuning/jobs', jobBody({ suffix: 'peft' })))
        .body;
      const { AdaptersRepository, AttemptsRepository } = await import('@lorafleet/db');
      const claim = await new AttemptsRepository(api.dataSource).claimAttempt(
        job.id,
        'test-worker',
        'cpu',
      );
      const weights = Buffer.from('not-really-safetensors');
      const lineage: Lineage = {
        lorafleet_version: LORAFLEET_VERSION,
        base_model: 'tiny-random-gpt2',
        base_model_hash: job.base_model_hash,
        base_model_sha256: 'b'.repeat(64),
        training_file_sha256: 'c'.repeat(64),
        validation_file_sha256: null,
        config_sha256: 'd'.repeat(64),
        spec: claim!.job.spec,
        backend: 'cpu',
        tfjs_version: '4.22.0',
        resumed_from_step: null,
        fine_tuning_job_id: job.id,
      };
      const adapter = await new AdaptersRepository(api.dataSource).completeWithAdapter(
        job.id,
        claim!.leaseToken,
        {
          adapterConfig: { peft_type: 'LORA', r: 8 },
          weights,
          lineage,
          fineTunedModel: `ft:tiny-random-gpt2:${job.organization_id}:peft:${job.id}`,
          trainedTokens: 12,
        },
      );
      const id = adapter!.id;
      const meta = await alice.request('GET', `/v1/adapters/${id}`);
      expect(meta.body).toMatchObject({
        id,
        object: 'adapter',
        fine_tuning_job_id: job.id,
        adapter_config: { r: 8 },
      });
      const config = await alice.request('GET', `/v1/adapters/${id}/files/adapter_config.json`);
      expect(config.body).toEqual({ peft_type: 'LORA', r: 8 });
      const raw = await fetch(`${api.baseUrl}/v1/adapters/${id}/files/adapter_model.safetensors`, {
        headers: { authorization: `Bearer ${alice.apiKey}` },
      });
      expect(Buffer.from(await raw.arrayBuffer())).toEqual(weights);
      expect((await alice.request('GET', `/v1/adapters/${id}/files/..%2Fsecret`)).status).toBe(404);

      const archive = await fetch(`${api.baseUrl}/v1/adapters/${id}/archive`, {
        headers: { authorization: `Bearer ${alice.apiKey}` },
      });
      expect(archive.headers.get('content-type')).toBe('application/gzip');
      const tar = gunzipSync(Buffer.from(await archive.arrayBuffer()));
      const names: string[] = [];
      for (let offset = 0; offset + 512 <= tar.length;) {
        const name = tar
          .subarray(offset, offset + 100)
          .toString('ascii')
          .replace(/\0.*$/s, '');
        if (!name) break;
        const size = parseInt(tar.subarray(offset + 124, offset + 136).toString('ascii'), 8);
        names.push(name);
        if (name.endsWith('adapter_model.safetensors'))
          expect(tar.subarray(offset + 512, offset + 512 + size)).toEqual(weights);
        if (name.endsWith('lorafleet.json')) {
          // The job's lineage through LineageSchema, with the adapter record's fields.
          const written = JSON.parse(
            tar.subarray(offset + 512, offset + 512 + size).toString('utf8'),
          ) as unknown;
          expect(LineageSchema.parse(written)).toEqual({
            ...lineage,
            adapter_id: id,
            fine_tuned_model: `ft:tiny-random-gpt2:${job.organization_id}:peft:${job.id}`,
            weights_sha256: createHash('sha256').update(weights).digest('hex'),
          });
        }
        offset += 512 + Math.ceil(size / 512) * 512;
      }
      expect(names).toEqual([
        `${id}/adapter_config.json`,
        `${id}/adapter_model.safetensors`,
        `${id}/lorafleet.json`,
      ]);

      const ft = `ft:tiny-random-gpt2:${job.organization_id}:peft:${job.id}`;
      const models = await alice.request('GET', '/v1/models');
      expect(models.body.data.map((m: { id: string }) => m.id)).toContain(ft);
      expect((await bob.request('GET', `/v1/models/${encodeURIComponent(ft)}`)).status).toBe(404);
      expect((await bob.request('DELETE', `/v1/models/${encodeURIComponent(ft)}`)).status).toBe(
        404,
      );
      expect((await alice.request('GET', `/v1/models/${encodeURIComponent(ft)}`)).body.id).toBe(ft);
      expect((await alice.request('DELETE', '/v1/models/tiny-random-gpt2')).status).toBe(403);
      expect((await alice.request('DELETE', `/v1/models/${encodeURIComponent(ft)}`)).body).toEqual({
        id: ft,
        object: 'model',
        deleted: true,
      });
      expect((await alice.request('GET', `/v1/adapters/${id}`)).status).toBe(404);
    });
  });

  describe('fleet', () => {
    it('is for admin keys only', async () => {
      expect((await alice.request('GET', '/v1/workers')).status).toBe(403);
      const fleet = await admin.request('GET', '/v1/workers');
      expect(fleet.status).toBe(200);
      expect(fleet.body).toMatchObject({ object: 'list', data: [] });
      expect(fleet.body.queue).toEqual(expect.objectContaining({ waiting: expect.any(Number) }));
    });
  });

  describe('enqueue idempotency (R3)', () => {
    it('enqueues one BullMQ job when the relay delivers the same outbox entry twice', async () => {
      const job = (await alice.request('POST', '/v1/fine_tuning/jobs', jobBody())).body;
      await until(
        'first delivery',
        async () => (await queue.getJob(job.id as string)) ?? undefined,
      );
      // Simulate a relay that crashed after `add` but before `markDispatched`.
      await api.dataSource.query(
        'INSERT INTO outbox (job_id, queue, payload) VALUES ($1, $2, $3::jsonb)',
        [
          job.id,
          QUEUE_NAMES.fineTune,
          JSON.stringify({ schemaVersion: 1, jobId: job.id, tenantId: job.organization_id }),
        ],
      );
      await until('outbox drained', async () =>
        (await new OutboxRepository(api.dataSource).pending(10)).length === 0 ? true : undefined,
      );
      const waiting = await queue.getJobs(['waiting', 'active', 'delayed']);
      expect(waiting.filter((j) => j.id === job.id)).toHaveLength(1);
    });
  });

  it('answers health probes', async () => {
    expect(await (await fetch(`${api.baseUrl}/healthz`)).json()).toEqual({ status: 'ok' });
    const ready = await fetch(`${api.baseUrl}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({
      status: 'ready',
      checks: { postgres: 'ok', redis: 'ok' },
    });
  });
});
