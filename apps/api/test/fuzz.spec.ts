/**
 * fast-check fuzz of the request surface: job bodies, uploads and list queries. Whatever
 * arrives, the API answers 2xx or 4xx, every 4xx in OpenAI's error shape, and never 5xx.
 * Runs are bounded (LORAFLEET_FUZZ_RUNS scales them) and seeded (FC_SEED) so that a failure
 * replays exactly.
 */
import fc from 'fast-check';
import { Client, GOOD_JSONL, startApi, type ApiHarness } from './api-harness';

jest.setTimeout(40_000);

const SCALE = Number(process.env.LORAFLEET_FUZZ_RUNS ?? 1);
const SEED = Number(process.env.FC_SEED ?? 20_260_529);
const runs = (n: number) => ({ numRuns: Math.max(1, Math.round(n * SCALE)), seed: SEED });

interface Answer {
  status: number;
  body: unknown;
}

/** Fails with the request in the message unless the answer is 2xx, or 4xx with an OpenAI error. */
function expectWellFormed(what: unknown, answer: Answer): void {
  const { status, body } = answer;
  const ok = status >= 200 && status < 300;
  const clientError =
    status >= 400 &&
    status < 500 &&
    typeof body === 'object' &&
    body !== null &&
    Object.keys(body).join() === 'error' &&
    (() => {
      const error = (body as { error: Record<string, unknown> }).error;
      return (
        typeof error.message === 'string' &&
        error.message.length > 0 &&
        typeof error.type === 'string' &&
        (error.param === null || typeof error.param === 'string') &&
        (error.code === null || typeof error.code === 'string')
      );
    })();
  if (!ok && !clientError) {
    throw new Error(
      `unexpected answer ${status} ${JSON.stringify(body)} to ${JSON.stringify(what).slice(0, 2000)}`,
    );
  }
}

/** Any Unicode text (NUL, controls, astral planes) that can travel in a URL or form field. */
const text = (maxLength: number, minLength = 0) =>
  fc.string({ unit: 'binary', minLength, maxLength }).filter((s) => {
    try {
      encodeURIComponent(s); // throws on lone surrogates, which no client can send
      return true;
    } catch {
      return false;
    }
  });

/** Header values fetch can send: visible ASCII, spaces and tabs. */
const headerValue = fc
  .string({ unit: 'binary-ascii', maxLength: 300 })
  .filter((s) => /^[\t\x20-\x7e]*$/.test(s));

describe('fuzz: never a 5xx', () => {
  let api: ApiHarness;
  let alice: Client;
  let fileId: string;
  let jobId: string;

  beforeAll(async () => {
    api = await startApi({
      LORAFLEET_MAX_ACTIVE_JOBS_PER_TENANT: '100000',
      LORAFLEET_UPLOAD_MAX_BYTES: '65536',
    });
    const tenant = await api.tenants.createTenant('fuzz');
    alice = new Client(api.baseUrl, (await api.apiKeys.issue(tenant.id)).plaintext);
    fileId = (await alice.upload(GOOD_JSONL)).body.id;
    jobId = (
      await alice.request('POST', '/v1/fine_tuning/jobs', {
        model: 'tiny-random-gpt2',
        training_file: fileId,
      })
    ).body.id;
  });

  afterAll(async () => {
    await api.close();
  });

  it('POST /v1/fine_tuning/jobs with arbitrary JSON bodies and Idempotency-Keys', async () => {
    // Near-valid bodies reach deep into validation; wholly arbitrary JSON covers the rest.
    const anything = fc.jsonValue({ maxDepth: 3, stringUnit: 'binary' });
    const either = <T>(arb: fc.Arbitrary<T>) => fc.oneof(arb, anything);
    const number = fc.oneof(fc.integer(), fc.double(), fc.constant('auto'));
    const nearlyValid = fc.record(
      {
        model: either(fc.constantFrom('tiny-random-gpt2', '../etc', 'nope', '', 'a/b', 'x\u0000')),
        training_file: either(fc.oneof(fc.constant('FILE'), text(140))),
        validation_file: either(fc.oneof(fc.constant(null), fc.constant('FILE'), text(20))),
        suffix: either(text(70)),
        seed: either(fc.integer()),
        metadata: either(fc.dictionary(text(70), text(20), { maxKeys: 20 })),
        hyperparameters: either(
          fc.record(
            { n_epochs: number, batch_size: number, learning_rate_multiplier: number },
            { requiredKeys: [] },
          ),
        ),
        method: either(
          fc.record({
            type: either(fc.constant('supervised')),
            supervised: either(
              fc.record({ hyperparameters: either(fc.record({ n_epochs: number })) }),
            ),
          }),
        ),
        lora: either(
          fc.record(
            {
              r: either(fc.integer()),
              alpha: either(fc.double()),
              dropout: either(fc.double()),
              target_modules: either(
                fc.oneof(fc.constant('all-linear'), fc.array(text(10), { maxLength: 70 })),
              ),
              use_rslora: anything,
            },
            { requiredKeys: [] },
          ),
        ),
        training: either(
          fc.record(
            {
              learning_rate: either(fc.double()),
              max_seq_length: either(fc.integer()),
              lr_scheduler: either(fc.constantFrom('linear', 'cosine', 'step')),
              warmup_steps: either(fc.integer()),
              gradient_accumulation_steps: either(fc.integer()),
              max_steps: either(fc.integer()),
            },
            { requiredKeys: [] },
          ),
        ),
      },
      { requiredKeys: [] },
    );
    const body = fc.oneof(
      { weight: 3, arbitrary: nearlyValid },
      { weight: 1, arbitrary: anything },
    );
    await fc.assert(
      fc.asyncProperty(body, fc.option(headerValue, { nil: undefined }), async (raw, key) => {
        // 'FILE' stands for the real file id, so valid combinations happen too.
        const json = JSON.stringify(raw ?? null).replaceAll('"FILE"', JSON.stringify(fileId));
        const response = await fetch(`${api.baseUrl}/v1/fine_tuning/jobs`, {
          method: 'POST',
          headers: {
            authorization: `Bearer ${alice.apiKey}`,
            'content-type': 'application/json',
            ...(key === undefined ? {} : { 'idempotency-key': key }),
          },
          body: json,
        });
        const answer = { status: response.status, body: await response.json().catch(() => null) };
        expectWellFormed({ json, key }, answer);
        if (answer.status < 300) expect(answer.status).toBe(201);
      }),
      runs(150),
    );
  });

  it('POST /v1/fine_tuning/jobs with bodies that are not JSON at all', async () => {
    const contentType = fc.constantFrom(
      'application/json',
      'application/json; charset=utf-8',
      'text/plain',
      'application/x-www-form-urlencoded',
      'application/octet-stream',
    );
    await fc.assert(
      fc.asyncProperty(text(200), contentType, async (text, type) => {
        const response = await fetch(`${api.baseUrl}/v1/fine_tuning/jobs`, {
          method: 'POST',
          headers: { authorization: `Bearer ${alice.apiKey}`, 'content-type': type },
          body: text,
        });
        const answer = { status: response.status, body: await response.json().catch(() => null) };
        expectWellFormed({ text, type }, answer);
      }),
      runs(80),
    );
  });

  it('POST /v1/files with arbitrary bytes, JSONL-ish lines, file names and purposes', async () => {
    const jsonl = fc
      .array(
        fc.oneof(
          fc.jsonValue({ maxDepth: 3, stringUnit: 'binary' }),
          fc.record({ prompt: fc.jsonValue(), completion: fc.jsonValue() }, { requiredKeys: [] }),
          fc.record({
            messages: fc.array(
              fc.record({ role: fc.jsonValue(), content: fc.jsonValue() }, { requiredKeys: [] }),
              { maxLength: 4 },
            ),
          }),
        ),
        { maxLength: 12 },
      )
      .map((lines) => Buffer.from(lines.map((l) => JSON.stringify(l)).join('\n')));
    const bytes = fc.uint8Array({ maxLength: 3000 }).map((a) => Buffer.from(a));
    const content = fc.oneof(jsonl, bytes);
    const filename = fc.oneof(fc.constant('train.jsonl'), text(80));
    const purpose = fc.oneof(
      { weight: 4, arbitrary: fc.constant('fine-tune') },
      { weight: 1, arbitrary: text(20) },
    );
    await fc.assert(
      fc.asyncProperty(content, filename, purpose, async (data, name, why) => {
        const form = new FormData();
        form.append('purpose', why);
        form.append('file', new Blob([data]), name);
        const response = await fetch(`${api.baseUrl}/v1/files`, {
          method: 'POST',
          headers: { authorization: `Bearer ${alice.apiKey}` },
          body: form,
        });
        const answer = { status: response.status, body: await response.json().catch(() => null) };
        expectWellFormed(
          { bytes: data.length, head: data.subarray(0, 64).toString('hex'), name, why },
          answer,
        );
        if (answer.status < 300) {
          expect((answer.body as { status: string }).status).toMatch(/^(processed|error)$/);
        }
      }),
      {
        ...runs(100),
        examples: [
          [Buffer.from([0]), 'train.jsonl', 'fine-tune'],
          [Buffer.from(GOOD_JSONL), '', 'fine-tune'],
          [Buffer.from(GOOD_JSONL), 'a\u0000b', 'fine-tune'],
        ],
      },
    );
  });

  it('GET list, retrieve, events and checkpoints with arbitrary query strings and ids', async () => {
    const key = fc.oneof(
      fc.constantFrom('limit', 'after', 'status', 'metadata[team]', 'metadata[]', 'metadata'),
      text(20),
    );
    const value = fc.oneof(
      fc.constantFrom('1', '100', '0', '-1', '1e3', 'queued', 'paused', 'JOB', 'ftevent-1'),
      text(40),
    );
    const query = fc
      .array(fc.tuple(key, value), { maxLength: 6 })
      .map((pairs) =>
        pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&'),
      );
    const id = fc.oneof(fc.constant('JOB'), text(60, 1));
    const route = fc.oneof(
      fc.constant('/v1/fine_tuning/jobs'),
      id.map((i) => `/v1/fine_tuning/jobs/${encodeURIComponent(i)}`),
      id.map((i) => `/v1/fine_tuning/jobs/${encodeURIComponent(i)}/events`),
      id.map((i) => `/v1/fine_tuning/jobs/${encodeURIComponent(i)}/checkpoints`),
      id.map((i) => `/v1/files/${encodeURIComponent(i)}`),
      id.map((i) => `/v1/models/${encodeURIComponent(i)}`),
    );
    await fc.assert(
      fc.asyncProperty(route, query, async (path, q) => {
        const url = `${path}?${q}`.replaceAll('JOB', jobId);
        const answer = await alice.request('GET', url);
        expectWellFormed({ url }, answer);
      }),
      {
        ...runs(200),
        // Cases earlier runs found (5xx before the fixes), replayed on every run.
        examples: [
          ['/v1/fine_tuning/jobs/JOB/events', 'after=1&after=1'],
          ['/v1/fine_tuning/jobs/JOB/checkpoints', 'after=a&after=b&limit=1&limit=2'],
          ['/v1/fine_tuning/jobs', 'after=JOB&after=JOB&metadata%5Bk%5D=1&metadata%5Bk%5D=2'],
          ['/v1/fine_tuning/jobs/%00', ''],
          ['/v1/fine_tuning/jobs', 'after=%00'],
        ],
      },
    );
  });
});
