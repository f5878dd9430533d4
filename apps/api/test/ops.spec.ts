/**
 * Ops endpoints (DESIGN §4 Ops): /metrics, /docs with the OpenAPI document and its drift
 * checks, /admin/queues behind HTTP Basic, and the R23 Redis eviction-policy warning.
 */
import { Logger } from '@nestjs/common';
import {
  FileObjectSchema,
  FineTuningJobEventSchema,
  FineTuningJobSchema,
  LoraConfigSchema,
  OpenAiErrorSchema,
  listPage,
} from '@lorafleet/contracts';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { OutboxRelayService } from '../src/jobs/outbox-relay.service';
import {
  buildOpenApiDocument,
  documentedRoutes,
  renderOpenApiJson,
} from '../src/ops/openapi.document';
import {
  CheckpointListSchema,
  FileListSchema,
  FineTuningJobListSchema,
  ModelListSchema,
  ReadinessSchema,
  WorkerListSchema,
} from '../src/ops/response.schemas';
import {
  Client,
  GOOD_JSONL,
  PrivateRedis,
  freePort,
  startApi,
  until,
  type ApiHarness,
} from './api-harness';

jest.setTimeout(40_000);

const REPO_ROOT = path.resolve(__dirname, '../../..');

/** `/v1/fine_tuning/jobs/:id` and `/v1/fine_tuning/jobs/{fine_tuning_job_id}` → one key. */
const routeKey = (method: string, url: string) =>
  `${method} ${url.replace(/\{[^}]+\}|:[A-Za-z_]+|\*/g, '{}')}`;

/** The value of one Prometheus sample, or undefined when the series is absent. */
function sample(
  text: string,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const wanted = Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`));
    if (wanted) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

const basic = (user: string, password: string) =>
  `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

describe('ops endpoints', () => {
  let api: ApiHarness;
  let alice: Client;
  let adminKey: string;
  const routes: { method: string; url: string }[] = [];

  beforeAll(async () => {
    // The relay still runs on every create; its poll is slowed so that the outbox test can
    // hold an entry back deterministically.
    api = await startApi(
      { LORAFLEET_OUTBOX_POLL_MS: '60000' },
      {
        beforeListen: (app) => {
          app
            .getHttpAdapter()
            .getInstance()
            .addHook('onRoute', (route) => {
              for (const method of [route.method].flat()) routes.push({ method, url: route.url });
            });
        },
      },
    );
    const tenant = await api.tenants.createTenant('alice');
    alice = new Client(api.baseUrl, (await api.apiKeys.issue(tenant.id)).plaintext);
    adminKey = (await api.apiKeys.issue(tenant.id, { isFleetAdmin: true })).plaintext;
  });

  afterAll(async () => {
    await api.close();
  });

  describe('/metrics', () => {
    it('reports HTTP latency by route template, queue depth, jobs by status and the outbox backlog', async () => {
      const file = (await alice.upload(GOOD_JSONL)).body.id as string;
      const job = await alice.request('POST', '/v1/fine_tuning/jobs', {
        model: 'tiny-random-gpt2',
        training_file: file,
      });
      expect(job.status).toBe(201);
      expect((await alice.request('GET', `/v1/fine_tuning/jobs/${job.body.id}`)).status).toBe(200);
      expect((await alice.request('GET', '/v1/fine_tuning/jobs/ftjob-nope')).status).toBe(404);
      expect((await fetch(`${api.baseUrl}/no/such/route/${Date.now()}`)).status).toBe(404);

      // The relay enqueues asynchronously: scrape until the job shows up as waiting.
      const text = await until('job counted as waiting', async () => {
        const response = await fetch(`${api.baseUrl}/metrics`);
        expect(response.status).toBe(200);
        expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
        const body = await response.text();
        return sample(body, 'lorafleet_queue_jobs', { state: 'waiting' }) === 1 ? body : undefined;
      });

      const jobRoute = { method: 'GET', route: '/v1/fine_tuning/jobs/:id' };
      expect(
        sample(text, 'lorafleet_http_request_duration_seconds_count', {
          ...jobRoute,
          status_code: '200',
        }),
      ).toBe(1);
      expect(
        sample(text, 'lorafleet_http_request_duration_seconds_count', {
          ...jobRoute,
          status_code: '404',
        }),
      ).toBe(1);
      expect(
        sample(text, 'lorafleet_http_request_duration_seconds_count', {
          method: 'POST',
          route: '/v1/fine_tuning/jobs',
          status_code: '201',
        }),
      ).toBe(1);
      expect(
        sample(text, 'lorafleet_http_request_duration_seconds_bucket', {
          ...jobRoute,
          status_code: '200',
          le: '+Inf',
        }),
      ).toBe(1);
      // Raw URLs never become labels: unmatched paths share one series.
      expect(text).not.toContain(job.body.id);
      expect(text).not.toContain('/no/such/route');
      expect(
        sample(text, 'lorafleet_http_request_duration_seconds_count', { route: 'unmatched' }),
      ).toBeGreaterThanOrEqual(1);

      expect(sample(text, 'lorafleet_queue_jobs', { queue: 'fine-tune', state: 'active' })).toBe(0);
      expect(sample(text, 'lorafleet_fine_tuning_jobs', { status: 'queued' })).toBe(1);
      expect(sample(text, 'lorafleet_fine_tuning_jobs', { status: 'succeeded' })).toBe(0);
      expect(sample(text, 'lorafleet_outbox_pending')).toBe(0);
      expect(sample(text, 'lorafleet_dependency_up', { dependency: 'postgres' })).toBe(1);
      expect(sample(text, 'lorafleet_dependency_up', { dependency: 'redis' })).toBe(1);
      expect(sample(text, 'process_cpu_user_seconds_total')).toEqual(expect.any(Number));
    });

    it('counts outbox entries not yet relayed, with the age of the oldest', async () => {
      const [row] = await api.dataSource.query<{ id: string; tenant_id: string }[]>(
        'SELECT id, tenant_id FROM fine_tuning_jobs LIMIT 1',
      );
      // Inserted behind the API's back, so only the relay's poll (60 s here) would see it.
      await api.dataSource.query(
        `INSERT INTO outbox (job_id, queue, payload, created_at)
         VALUES ($1, 'fine-tune', $2::jsonb, now() - interval '1 hour')`,
        [row.id, JSON.stringify({ schemaVersion: 1, jobId: row.id, tenantId: row.tenant_id })],
      );
      const text = await (await fetch(`${api.baseUrl}/metrics`)).text();
      expect(sample(text, 'lorafleet_outbox_pending')).toBe(1);
      expect(sample(text, 'lorafleet_outbox_oldest_pending_age_seconds')).toBeGreaterThan(3500);
      api.app.get(OutboxRelayService).kick();
      await until('relay drains the outbox', async () => {
        const next = await (await fetch(`${api.baseUrl}/metrics`)).text();
        return sample(next, 'lorafleet_outbox_pending') === 0 &&
          sample(next, 'lorafleet_outbox_oldest_pending_age_seconds') === 0
          ? true
          : undefined;
      });
    });
  });

  describe('/docs', () => {
    it('serves the OpenAPI 3.1 document and an HTML route list', async () => {
      const response = await fetch(`${api.baseUrl}/docs/openapi.json`);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toMatch(/^application\/json/);
      const doc = (await response.json()) as any;
      expect(doc).toEqual(buildOpenApiDocument());
      expect(doc.openapi).toBe('3.1.0');
      const job = doc.components.schemas.FineTuningJob;
      expect(job.required).toEqual(expect.arrayContaining(['id', 'status', 'progress', 'lora']));
      expect(
        doc.paths['/v1/fine_tuning/jobs'].post.requestBody.content['application/json'].schema,
      ).toEqual({ $ref: '#/components/schemas/CreateFineTuningJobRequest' });
      // Every $ref points at a schema that exists.
      const refs = JSON.stringify(doc).match(/#\/components\/schemas\/[A-Za-z]+/g) ?? [];
      for (const ref of new Set(refs)) {
        expect(doc.components.schemas[ref.split('/').pop()!]).toBeDefined();
      }

      const html = await fetch(`${api.baseUrl}/docs`);
      expect(html.headers.get('content-type')).toMatch(/^text\/html/);
      const page = await html.text();
      expect(page).toContain('/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints');
      expect(page).toContain('href="/docs/openapi.json"');
      expect(page).not.toMatch(/<script|https?:\/\//); // self-contained: no CDN
    });

    it('describes what the API actually answers: live responses parse with the schemas the document is built from', async () => {
      const file = await alice.upload(GOOD_JSONL);
      const job = await alice.request('POST', '/v1/fine_tuning/jobs', {
        model: 'tiny-random-gpt2',
        training_file: file.body.id,
        lora: { r: 4 },
      });
      const admin = new Client(api.baseUrl, adminKey);
      const cases: [z.ZodObject, unknown][] = [
        [FileObjectSchema, file.body],
        [FileListSchema, (await alice.request('GET', '/v1/files')).body],
        [FineTuningJobSchema, job.body],
        [FineTuningJobListSchema, (await alice.request('GET', '/v1/fine_tuning/jobs')).body],
        [
          listPage(FineTuningJobEventSchema),
          (await alice.request('GET', `/v1/fine_tuning/jobs/${job.body.id}/events`)).body,
        ],
        [
          CheckpointListSchema,
          (await alice.request('GET', `/v1/fine_tuning/jobs/${job.body.id}/checkpoints`)).body,
        ],
        [ModelListSchema, (await alice.request('GET', '/v1/models')).body],
        [WorkerListSchema, (await admin.request('GET', '/v1/workers')).body],
        [OpenAiErrorSchema, (await alice.request('GET', '/v1/files/file-nope')).body],
        [ReadinessSchema, await (await fetch(`${api.baseUrl}/readyz`)).json()],
      ];
      for (const [schema, body] of cases) {
        expect(schema.safeParse(body).error).toBeUndefined();
        // No field goes undocumented (zod objects ignore unknown keys, so compare them).
        const documented = Object.keys(schema.shape);
        expect(Object.keys(body as object).filter((k) => !documented.includes(k))).toEqual([]);
      }
      const loraKeys = Object.keys(LoraConfigSchema.shape);
      expect(Object.keys(job.body.lora).filter((k) => !loraKeys.includes(k))).toEqual([]);
    });

    it('has docs/openapi.json committed exactly as generated (run `npm run openapi`)', () => {
      const committed = readFileSync(path.join(REPO_ROOT, 'docs/openapi.json'), 'utf8');
      expect(committed).toBe(renderOpenApiJson());
    });

    it('documents every route the API serves, and serves every documented route', () => {
      // The REST API and the ops endpoints; the dashboard's pages and bull-board's internals
      // are not API surface.
      const apiSurface = (url: string) =>
        url === '/v1' ||
        url.startsWith('/v1/') ||
        ['/healthz', '/readyz', '/metrics', '/docs', '/docs/openapi.json'].includes(url);
      const served = new Set(
        routes
          .filter((r) => r.method !== 'HEAD' && apiSurface(r.url))
          .map((r) => routeKey(r.method, r.url)),
      );
      const documented = new Set(
        documentedRoutes()
          .filter((r) => r.path !== '/admin/queues')
          .map((r) => routeKey(r.method, r.path)),
      );
      expect(served.size).toBeGreaterThan(20);
      expect([...served].filter((r) => !documented.has(r))).toEqual([]);
      expect([...documented].filter((r) => !served.has(r))).toEqual([]);
    });
  });

  describe('/admin/queues', () => {
    it('answers 401 with WWW-Authenticate without an admin key as the Basic password', async () => {
      const tenant = await api.tenants.createTenant('plain');
      const plainKey = (await api.apiKeys.issue(tenant.id)).plaintext;
      const attempts: [string, Record<string, string>][] = [
        ['no credentials', {}],
        ['a non-admin key', { authorization: basic('ops', plainKey) }],
        ['an unknown key', { authorization: basic('ops', 'lf-not-a-key') }],
        ['no password', { authorization: `Basic ${Buffer.from('ops').toString('base64')}` }],
        ['an admin key as Bearer', { authorization: `Bearer ${adminKey}` }],
        ['garbage', { authorization: 'Basic !!!' }],
      ];
      for (const [what, headers] of attempts) {
        for (const route of ['/admin/queues', '/admin/queues/api/queues']) {
          const response = await fetch(`${api.baseUrl}${route}`, { headers });
          expect({ what, route, status: response.status }).toEqual({ what, route, status: 401 });
          expect(response.headers.get('www-authenticate')).toMatch(
            /^Basic realm="lorafleet admin"/,
          );
          expect(((await response.json()) as any).error.code).toBe('invalid_api_key');
        }
      }
    });

    it('serves bull-board with the fine-tune queue to an admin key under any user name', async () => {
      const file = (await alice.upload(GOOD_JSONL)).body.id as string;
      await alice.request('POST', '/v1/fine_tuning/jobs', {
        model: 'tiny-random-gpt2',
        training_file: file,
      });
      const page = await fetch(`${api.baseUrl}/admin/queues`, {
        headers: { authorization: basic('anyone', adminKey) },
      });
      expect(page.status).toBe(200);
      expect(page.headers.get('content-type')).toMatch(/^text\/html/);
      expect(await page.text()).toContain('<base href="/admin/queues/" />');
      // Its static assets sit behind the same guard.
      const asset = `${api.baseUrl}/admin/queues/static/favicon-32x32.png`;
      expect((await fetch(asset)).status).toBe(401);
      const icon = await fetch(asset, { headers: { authorization: basic('x', adminKey) } });
      expect(icon.status).toBe(200);
      expect(icon.headers.get('content-type')).toBe('image/png');
      const queues = await until('board lists the queued job', async () => {
        const response = await fetch(`${api.baseUrl}/admin/queues/api/queues`, {
          headers: { authorization: basic('', adminKey) },
        });
        const body = (await response.json()) as any;
        const queue = body.queues.find((q: { name: string }) => q.name === 'fine-tune');
        return queue?.counts.waiting >= 1 ? queue : undefined;
      });
      expect(queues.readOnlyMode).toBe(true);
    });
  });
});

describe('Redis eviction policy (R23)', () => {
  let redis: PrivateRedis;
  let api: ApiHarness | undefined;
  let warn: jest.SpyInstance;

  beforeAll(async () => {
    redis = new PrivateRedis(await freePort(), { maxmemoryPolicy: 'allkeys-lru' });
    await redis.start();
    warn = jest.spyOn(Logger.prototype, 'warn');
  });

  afterAll(async () => {
    warn.mockRestore();
    await api?.close();
    await redis.stop();
  });

  it('warns in the startup log and on /readyz unless maxmemory-policy is noeviction', async () => {
    api = await startApi({ REDIS_URL: redis.url });
    const message = 'redis maxmemory-policy is allkeys-lru; BullMQ needs noeviction';
    await until('startup warning', () =>
      Promise.resolve(
        warn.mock.calls.some(([text]) => String(text).includes(message)) ? true : undefined,
      ),
    );
    const ready = await fetch(`${api.baseUrl}/readyz`);
    // A warning is not an outage: the API stays ready, and says why it is worried.
    expect(ready.status).toBe(200);
    expect(((await ready.json()) as any).warnings).toEqual([expect.stringContaining(message)]);
  });
});
