/**
 * Issue 14 (hardening), the API's part: each test is an attack or fault from the adversarial
 * runs, sent to the real API on Postgres and Redis exactly as they sent it.
 */
import { defaultMaxSeqLength } from '@lorafleet/data';
import { FilesRepository, WorkersRepository } from '@lorafleet/db';
import { AppProcess, waitFor } from '@lorafleet/testing';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { Client, GOOD_JSONL, MODELS_DIR, freePort, startApi, type ApiHarness } from './api-harness';

jest.setTimeout(120_000);

/** A raw HTTP exchange, for requests `fetch` refuses to send (huge headers, bad URLs). */
function rawRequest(
  port: number,
  text: string,
): Promise<{ status: number; headers: string; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(text));
    const chunks: Buffer[] = [];
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      const response = Buffer.concat(chunks).toString('utf8');
      const [head, ...rest] = response.split('\r\n\r\n');
      resolve({
        status: Number(/^HTTP\/1\.1 (\d+)/.exec(head)?.[1] ?? 0),
        headers: head,
        body: rest.join('\r\n\r\n'),
      });
    });
  });
}

/** A GET with a path `fetch` would normalise or refuse. */
function rawGet(baseUrl: string, path: string, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; body: any }>((resolve, reject) => {
    const url = new URL(baseUrl);
    const req = httpRequest(
      { host: url.hostname, port: url.port, path, method: 'GET', headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown = text;
          try {
            body = JSON.parse(text);
          } catch {
            // not JSON
          }
          resolve({ status: res.statusCode ?? 0, body });
        });
      },
    );
    req.on('error', reject);
    req.end();
  });
}

const openAiShaped = {
  error: { message: expect.any(String), type: expect.any(String), code: expect.any(String) },
};

describe('issue 14 hardening (API)', () => {
  let api: ApiHarness;
  let alice: Client;
  let fileId: string;
  let port: number;

  beforeAll(async () => {
    api = await startApi({ LORAFLEET_MAX_ACTIVE_JOBS_PER_TENANT: '20' });
    const tenant = await api.tenants.createTenant('alice');
    alice = new Client(api.baseUrl, (await api.apiKeys.issue(tenant.id)).plaintext);
    fileId = (await alice.upload(GOOD_JSONL)).body.id;
    port = Number(new URL(api.baseUrl).port);
  });

  afterAll(async () => {
    await api?.close();
  });

  const jobBody = (extra: Record<string, unknown> = {}) => ({
    model: 'tiny-random-gpt2',
    training_file: fileId,
    hyperparameters: { n_epochs: 1 },
    ...extra,
  });

  /** A fresh tenant with one good file, so quota tests do not see each other's jobs. */
  async function freshTenant(name: string, harness = api): Promise<{ key: string; file: string }> {
    const tenant = await harness.tenants.createTenant(name);
    const key = (await harness.apiKeys.issue(tenant.id)).plaintext;
    const file = (await new Client(harness.baseUrl, key).upload(GOOD_JSONL)).body.id as string;
    return { key, file };
  }

  describe('item 1: the active-job quota is atomic', () => {
    it('40 concurrent creates by one tenant with a limit of 20: exactly 20 × 201 and 20 × 429', async () => {
      const { key, file } = await freshTenant('quota-one');
      const client = new Client(api.baseUrl, key);
      const answers = await Promise.all(
        Array.from({ length: 40 }, () =>
          client.request('POST', '/v1/fine_tuning/jobs', jobBody({ training_file: file })),
        ),
      );
      const statuses = answers.map((a) => a.status).sort();
      expect(statuses.filter((s) => s === 201)).toHaveLength(20);
      expect(statuses.filter((s) => s === 429)).toHaveLength(20);
      expect(answers.find((a) => a.status === 429)?.body.error).toMatchObject({
        code: 'rate_limit_exceeded',
        type: 'rate_limit_error',
      });
    });

    it('holds across two API processes on one database', async () => {
      const { key, file } = await freshTenant('quota-two');
      const ports = [await freePort(), await freePort()];
      const env = (p: number) => ({
        DATABASE_URL: api.scratch.url,
        REDIS_URL: api.env.REDIS_URL,
        LORAFLEET_MODELS_DIR: MODELS_DIR,
        LORAFLEET_QUEUE_PREFIX: api.env.LORAFLEET_QUEUE_PREFIX,
        LORAFLEET_MIN_EXAMPLES: '2',
        LORAFLEET_MAX_ACTIVE_JOBS_PER_TENANT: '20',
        LORAFLEET_LOG_LEVEL: 'error',
        HOST: '127.0.0.1',
        PORT: String(p),
      });
      const processes = ports.map((p) => new AppProcess('api', env(p)));
      try {
        const clients = ports.map((p) => new Client(`http://127.0.0.1:${p}`, key));
        for (const client of clients) {
          await waitFor(
            'api process ready',
            async () =>
              (await client.request('GET', '/healthz').catch(() => null))?.status === 200
                ? true
                : undefined,
            30_000,
            100,
          );
        }
        const answers = await Promise.all(
          Array.from({ length: 40 }, (_, i) =>
            clients[i % 2].request(
              'POST',
              '/v1/fine_tuning/jobs',
              jobBody({ training_file: file }),
            ),
          ),
        );
        const statuses = answers.map((a) => a.status);
        expect(statuses.filter((s) => s === 201)).toHaveLength(20);
        expect(statuses.filter((s) => s === 429)).toHaveLength(20);
      } finally {
        await Promise.all(processes.map((p) => p.stop()));
      }
    });
  });

  describe('item 2: bytes per line', () => {
    /** A prompt/completion line of exactly `bytes` UTF-8 bytes. */
    const lineOf = (bytes: number) => {
      const frame = JSON.stringify({ prompt: '', completion: 'ok' });
      return JSON.stringify({ prompt: 'x'.repeat(bytes - frame.length), completion: 'ok' });
    };

    it('a line over LORAFLEET_UPLOAD_MAX_LINE_BYTES (default 1 MiB) puts the file in error, naming the line', async () => {
      const limit = 1024 * 1024;
      const content = `${GOOD_JSONL}${lineOf(limit + 1)}\n${GOOD_JSONL}`;
      const answer = await alice.upload(content);
      expect(answer.status).toBe(200);
      expect(answer.body).toMatchObject({ status: 'error' });
      expect(answer.body.status_details).toContain(
        `line 4: line is ${limit + 1} bytes; the limit is ${limit} bytes a line`,
      );
      // A job refuses the file, so the trainer never sees the line.
      const job = await alice.request(
        'POST',
        '/v1/fine_tuning/jobs',
        jobBody({ training_file: answer.body.id }),
      );
      expect(job.status).toBe(400);
    });

    it('a line of exactly the limit is accepted', async () => {
      const answer = await alice.upload(`${GOOD_JSONL}${lineOf(1024 * 1024)}\n`);
      expect(answer.body).toMatchObject({ status: 'processed' });
    });
  });

  describe('item 3: lone surrogates', () => {
    it.each([
      ['a metadata value', { metadata: { a: '\ud800' } }, 'metadata.a'],
      ['a metadata key', { metadata: { ['k\udc00']: 'v' } }, 'metadata.k\ufffd'],
      ['the model name', { model: 'tiny\ud800' }, 'model'],
    ])('%s answers 400 naming the field', async (_what, extra, param) => {
      const answer = await alice.request('POST', '/v1/fine_tuning/jobs', jobBody(extra));
      expect(answer.status).toBe(400);
      expect(answer.body.error).toMatchObject({ code: 'invalid_request', param });
    });

    it('a file name whose bytes are no UTF-8 never reaches Postgres as one (guard: no 500)', async () => {
      // fetch would encode the surrogate as U+FFFD; the multipart header is written by hand.
      const boundary = 'lorafleetboundary';
      const body = Buffer.concat([
        Buffer.from(
          `--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n` +
            `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename*=UTF-8''a%ED%A0%80.jsonl\r\n\r\n`,
        ),
        Buffer.from(GOOD_JSONL),
        Buffer.from(`\r\n--${boundary}--\r\n`),
      ]);
      const response = await fetch(`${api.baseUrl}/v1/files`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${alice.apiKey}`,
          'content-type': `multipart/form-data; boundary=${boundary}`,
        },
        body,
      });
      // A filename whose bytes are not UTF-8 is decoded with replacement characters, so it
      // is stored; what matters is that it never reaches Postgres as a lone surrogate (500).
      expect(response.status).toBeLessThan(500);
    });
  });

  describe('item 4: event cursors', () => {
    it('after=ftevent-9223372036854775808 answers 400, not a bigint error', async () => {
      const job = await alice.request('POST', '/v1/fine_tuning/jobs', jobBody());
      expect(job.status).toBe(201);
      for (const after of ['ftevent-9223372036854775808', 'ftevent-0', 'ftevent-1e3', 'x']) {
        const answer = await alice.request(
          'GET',
          `/v1/fine_tuning/jobs/${job.body.id}/events?after=${encodeURIComponent(after)}`,
        );
        expect(answer.status).toBe(400);
        expect(answer.body.error).toMatchObject({ code: 'invalid_request', param: 'after' });
      }
      await alice.request('POST', `/v1/fine_tuning/jobs/${job.body.id}/cancel`);
    });
  });

  describe('item 5: information exposure', () => {
    it('the unknown-model error names the model, not the models directory', async () => {
      const answer = await alice.request(
        'POST',
        '/v1/fine_tuning/jobs',
        jobBody({ model: 'no-such-model' }),
      );
      expect(answer.status).toBe(404);
      expect(answer.body.error.message).toContain('no-such-model');
      expect(answer.body.error.message).not.toContain(MODELS_DIR);
      const get = await alice.request('GET', '/v1/models/no-such-model');
      expect(JSON.stringify(get.body)).not.toContain(MODELS_DIR);
    });

    it('event ids are per-job ordinals: a job shows the same ids whatever else the system did', async () => {
      const { key, file } = await freshTenant('events-a');
      const a = new Client(api.baseUrl, key);
      const first = await a.request(
        'POST',
        '/v1/fine_tuning/jobs',
        jobBody({ training_file: file }),
      );
      // Other tenants' activity in between must not show in the next job's ids.
      for (let i = 0; i < 3; i++) {
        const other = await alice.request('POST', '/v1/fine_tuning/jobs', jobBody());
        await alice.request('POST', `/v1/fine_tuning/jobs/${other.body.id}/cancel`);
      }
      const second = await a.request(
        'POST',
        '/v1/fine_tuning/jobs',
        jobBody({ training_file: file }),
      );
      const ids = async (jobId: string) =>
        (await a.request('GET', `/v1/fine_tuning/jobs/${jobId}/events`)).body.data.map(
          (e: { id: string }) => e.id,
        );
      expect(await ids(first.body.id)).toEqual(['ftevent-2', 'ftevent-1']);
      expect(await ids(second.body.id)).toEqual(['ftevent-2', 'ftevent-1']);
      // The cursor still pages.
      const page = await a.request(
        'GET',
        `/v1/fine_tuning/jobs/${second.body.id}/events?after=ftevent-2&limit=5`,
      );
      expect(page.body).toMatchObject({ has_more: false, data: [{ id: 'ftevent-1' }] });
      for (const job of [first, second]) {
        await a.request('POST', `/v1/fine_tuning/jobs/${job.body.id}/cancel`);
      }
    });

    it('a tenant admin key sees only its own jobs on /v1/workers and cannot open /admin/queues; a fleet admin sees all', async () => {
      const tenant = await api.tenants.createTenant('tenant-admin');
      const tenantAdmin = (await api.apiKeys.issue(tenant.id, { isAdmin: true })).plaintext;
      const fleetTenant = await api.tenants.createTenant('ops');
      const fleetAdmin = (await api.apiKeys.issue(fleetTenant.id, { isFleetAdmin: true }))
        .plaintext;
      // A worker busy with alice's job.
      const job = await alice.request('POST', '/v1/fine_tuning/jobs', jobBody());
      const workers = new WorkersRepository(api.dataSource);
      await workers.register({
        id: 'wrk-test',
        host: 'h',
        pid: 1,
        backend: 'cpu',
        device: null,
        versions: null,
        memoryLimitMb: null,
      });
      await workers.heartbeat('wrk-test', 'busy', job.body.id);
      try {
        const asTenant = await new Client(api.baseUrl, tenantAdmin).request('GET', '/v1/workers');
        expect(asTenant.status).toBe(200);
        expect(asTenant.body.data).toEqual([
          expect.objectContaining({ id: 'wrk-test', current_job: null }),
        ]);
        expect(asTenant.body.queue).toBeNull();
        const asFleet = await new Client(api.baseUrl, fleetAdmin).request('GET', '/v1/workers');
        expect(asFleet.body.data).toEqual([
          expect.objectContaining({ id: 'wrk-test', current_job: job.body.id }),
        ]);
        expect(asFleet.body.queue).toEqual(
          expect.objectContaining({ waiting: expect.any(Number) }),
        );
        const basic = (key: string) => `Basic ${Buffer.from(`ops:${key}`).toString('base64')}`;
        const board = (key: string) =>
          fetch(`${api.baseUrl}/admin/queues`, { headers: { authorization: basic(key) } });
        expect((await board(tenantAdmin)).status).toBe(401);
        expect((await board(fleetAdmin)).status).toBe(200);
      } finally {
        await api.dataSource.query("DELETE FROM workers WHERE id = 'wrk-test'");
        await alice.request('POST', `/v1/fine_tuning/jobs/${job.body.id}/cancel`);
      }
    });
  });

  describe("item 6: Fastify's own errors are OpenAI-shaped", () => {
    it('431 for a huge header block', async () => {
      const answer = await rawRequest(
        port,
        `GET /v1/files HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
      );
      expect(answer.status).toBe(431);
      expect(JSON.parse(answer.body)).toMatchObject(openAiShaped);
    });

    it('414 for a path parameter over the router limit, 400 for a bad URL', async () => {
      const auth = { authorization: `Bearer ${alice.apiKey}` };
      const long = await rawGet(api.baseUrl, `/v1/fine_tuning/jobs/${'a'.repeat(200)}`, auth);
      expect(long.status).toBe(414);
      expect(long.body).toMatchObject(openAiShaped);
      const bad = await rawGet(api.baseUrl, '/v1/fine_tuning/jobs/%E0%A4%A', auth);
      expect(bad.status).toBe(400);
      expect(bad.body).toMatchObject(openAiShaped);
    });

    it('two file parts in one upload answer an OpenAI-shaped error', async () => {
      const form = new FormData();
      form.append('purpose', 'fine-tune');
      form.append('file', new Blob([GOOD_JSONL]), 'a.jsonl');
      form.append('file', new Blob([GOOD_JSONL]), 'b.jsonl');
      const response = await fetch(`${api.baseUrl}/v1/files`, {
        method: 'POST',
        headers: { authorization: `Bearer ${alice.apiKey}` },
        body: form,
      });
      expect(response.status).toBe(400);
      expect(await response.json()).toMatchObject({
        error: {
          code: 'invalid_request',
          param: 'file',
          message: expect.stringMatching(/one file/),
        },
      });
    });
  });

  describe('item 7: request shapes', () => {
    it('a form-encoded job body answers 415; a bodiless cancel still works', async () => {
      const response = await fetch(`${api.baseUrl}/v1/fine_tuning/jobs`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${alice.apiKey}`,
          'content-type': 'application/x-www-form-urlencoded',
        },
        body: `model=tiny-random-gpt2&training_file=${fileId}`,
      });
      expect(response.status).toBe(415);
      expect(await response.json()).toMatchObject(openAiShaped);
      const text = await fetch(`${api.baseUrl}/v1/fine_tuning/jobs`, {
        method: 'POST',
        headers: { authorization: `Bearer ${alice.apiKey}`, 'content-type': 'text/plain' },
        body: JSON.stringify(jobBody()),
      });
      expect(text.status).toBe(415);
      const job = await alice.request('POST', '/v1/fine_tuning/jobs', jobBody());
      // What the openai client sends: POST, no body, no content-type.
      const cancel = await fetch(`${api.baseUrl}/v1/fine_tuning/jobs/${job.body.id}/cancel`, {
        method: 'POST',
        headers: { authorization: `Bearer ${alice.apiKey}` },
      });
      expect(cancel.status).toBe(200);
    });

    it('metadata[__proto__]=x as a list filter answers 400', async () => {
      const answer = await alice.request('GET', '/v1/fine_tuning/jobs?metadata[__proto__]=x');
      expect(answer.status).toBe(400);
      expect(answer.body.error).toMatchObject({ code: 'invalid_request' });
    });

    it('different hyperparameters and method.supervised.hyperparameters answer 400; equal ones are fine', async () => {
      const conflict = await alice.request('POST', '/v1/fine_tuning/jobs', {
        ...jobBody({ hyperparameters: { n_epochs: 1 } }),
        method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 2 } } },
      });
      expect(conflict.status).toBe(400);
      expect(conflict.body.error.param).toBe('method.supervised.hyperparameters');
      const same = await alice.request('POST', '/v1/fine_tuning/jobs', {
        ...jobBody({ hyperparameters: { n_epochs: 2 } }),
        method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 2 } } },
      });
      expect(same.status).toBe(201);
      await alice.request('POST', `/v1/fine_tuning/jobs/${same.body.id}/cancel`);
    });
  });

  describe('item 8: max_seq_length against the context length', () => {
    it('defaults to min(1024, context length), for every architecture', async () => {
      expect(defaultMaxSeqLength(64)).toBe(64);
      expect(defaultMaxSeqLength(4096)).toBe(1024);
      for (const [model, context] of [
        ['tiny-random-gpt2', 64],
        ['lorafleet-tiny-llama', 512],
      ] as const) {
        // The README's example: no training object at all.
        const job = await alice.request('POST', '/v1/fine_tuning/jobs', jobBody({ model }));
        expect(job.status).toBe(201);
        expect(job.body.training.max_seq_length).toBe(context);
        await alice.request('POST', `/v1/fine_tuning/jobs/${job.body.id}/cancel`);
      }
    });

    it.each([
      ['tiny-random-gpt2', 65],
      ['lorafleet-tiny-llama', 513],
    ])('%s: max_seq_length %d answers 400 at create', async (model, length) => {
      const answer = await alice.request(
        'POST',
        '/v1/fine_tuning/jobs',
        jobBody({ model, training: { max_seq_length: length } }),
      );
      expect(answer.status).toBe(400);
      expect(answer.body.error).toMatchObject({
        code: 'invalid_request',
        param: 'training.max_seq_length',
      });
    });
  });

  describe('item 9: lora.target_modules', () => {
    it('an unknown module answers 400 naming the modules the model has', async () => {
      const answer = await alice.request(
        'POST',
        '/v1/fine_tuning/jobs',
        jobBody({ lora: { target_modules: ['nope'] } }),
      );
      expect(answer.status).toBe(400);
      expect(answer.body.error).toMatchObject({ param: 'lora.target_modules' });
      expect(answer.body.error.message).toMatch(/"nope".*c_attn, c_proj, c_fc/);
      const llama = await alice.request(
        'POST',
        '/v1/fine_tuning/jobs',
        jobBody({ model: 'lorafleet-tiny-llama', lora: { target_modules: ['c_attn'] } }),
      );
      expect(llama.status).toBe(400);
      expect(llama.body.error.message).toContain('q_proj');
    });

    it('known names, dotted suffixes and layer paths are accepted', async () => {
      for (const target_modules of [
        ['c_attn'],
        ['attn.c_proj', 'mlp.c_fc'],
        ['h.1.attn.c_attn'],
        ['transformer.h.0.mlp.c_proj'],
      ]) {
        const job = await alice.request(
          'POST',
          '/v1/fine_tuning/jobs',
          jobBody({ lora: { target_modules } }),
        );
        expect(job.status).toBe(201);
        await alice.request('POST', `/v1/fine_tuning/jobs/${job.body.id}/cancel`);
      }
      // Layer 2 does not exist in a 2-layer model.
      const missing = await alice.request(
        'POST',
        '/v1/fine_tuning/jobs',
        jobBody({ lora: { target_modules: ['h.2.attn.c_attn'] } }),
      );
      expect(missing.status).toBe(400);
    });
  });

  describe('item 10: file purpose', () => {
    it('a fine-tune-results file as training_file answers 400 at create', async () => {
      const [{ tenant_id: tenantId }] = await api.dataSource.query<{ tenant_id: string }[]>(
        'SELECT tenant_id FROM files WHERE id = $1',
        [fileId],
      );
      // What a succeeded job leaves: its metrics CSV, stored as a processed results file.
      const results = await new FilesRepository(api.dataSource).create({
        tenantId,
        filename: 'step_metrics.csv',
        purpose: 'fine-tune-results',
        content: Buffer.from('step,train_loss\n1,2.5\n'),
        status: 'processed',
        statusDetails: null,
        exampleCount: 0,
      });
      const answer = await alice.request(
        'POST',
        '/v1/fine_tuning/jobs',
        jobBody({ training_file: results.id }),
      );
      expect(answer.status).toBe(400);
      expect(answer.body.error).toMatchObject({ code: 'invalid_file', param: 'training_file' });
    });
  });

  describe('item 19: security headers', () => {
    it('frames nothing on /admin/queues and /docs, nosniff on /v1, attachment on file content', async () => {
      for (const path of ['/admin/queues', '/docs']) {
        const response = await fetch(`${api.baseUrl}${path}`);
        expect(response.headers.get('x-frame-options')).toBe('DENY');
        expect(response.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
      }
      const list = await alice.request('GET', '/v1/files');
      expect(list.headers.get('x-content-type-options')).toBe('nosniff');
      const unauthorized = await new Client(api.baseUrl, '').request('GET', '/v1/files');
      expect(unauthorized.headers.get('x-content-type-options')).toBe('nosniff');
      const content = await alice.request('GET', `/v1/files/${fileId}/content`);
      expect(content.status).toBe(200);
      expect(content.headers.get('content-disposition')).toBe(
        `attachment; filename="train.jsonl"; filename*=UTF-8''train.jsonl`,
      );
    });
  });

  describe('item 20: limit', () => {
    it.each(['1e2', '0x10', ' 10', '10.0', '+5'])('limit=%j answers 400', async (limit) => {
      const answer = await alice.request(
        'GET',
        `/v1/fine_tuning/jobs?limit=${encodeURIComponent(limit)}`,
      );
      expect(answer.status).toBe(400);
      expect(answer.body.error.param).toBe('limit');
    });

    it('limit=10 is fine', async () => {
      expect((await alice.request('GET', '/v1/fine_tuning/jobs?limit=10')).status).toBe(200);
    });
  });
});
