/**
 * R1 and R4 (RELIABILITY.md) against a private redis-server this suite may kill and a TCP
 * proxy in front of the shared Postgres that it may cut. The shared Redis on 6379 and the
 * shared Postgres are never touched.
 */
import { Logger } from '@nestjs/common';
import { QUEUE_NAMES } from '@lorafleet/contracts';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
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

describe('resilience (R1, R4)', () => {
  let redis: PrivateRedis;
  let api: ApiHarness;
  let alice: Client;
  let fileId: string;
  let warn: jest.SpyInstance;

  const jobBody = () => ({ model: 'tiny-random-gpt2', training_file: fileId });

  /** BullMQ's view through a short-lived connection, so no client outlives a Redis restart. */
  async function inBullMq<T>(read: (queue: Queue) => Promise<T>): Promise<T> {
    const queue = new Queue(QUEUE_NAMES.fineTune, {
      prefix: api.env.LORAFLEET_QUEUE_PREFIX,
      connection: { url: redis.url, maxRetriesPerRequest: 0, retryStrategy: () => null },
    });
    queue.on('error', () => undefined); // a probe during an outage just fails
    try {
      return await read(queue);
    } finally {
      await queue.close();
    }
  }

  /** Ids of the deliveries BullMQ holds for workers to take, one entry per delivery. */
  const pendingDeliveries = () =>
    inBullMq(async (queue) =>
      (await queue.getJobs(['waiting', 'prioritized', 'delayed', 'active'])).map((j) => j.id),
    );

  const readiness = async () => {
    const response = await fetch(`${api.baseUrl}/readyz`);
    return { status: response.status, body: (await response.json()) as any };
  };

  const count = async (table: string): Promise<number> =>
    (await api.dataSource.query(`SELECT count(*)::int AS n FROM ${table}`))[0].n;

  beforeAll(async () => {
    redis = new PrivateRedis(await freePort());
    await redis.start();
    api = await startApi(
      { REDIS_URL: redis.url, LORAFLEET_RECONCILE_MS: '300' },
      { proxyPostgres: true },
    );
    const tenant = await api.tenants.createTenant('alice');
    alice = new Client(api.baseUrl, (await api.apiKeys.issue(tenant.id)).plaintext);
    fileId = (await alice.upload(GOOD_JSONL)).body.id;
    warn = jest.spyOn(Logger.prototype, 'warn');
  });

  afterAll(async () => {
    warn.mockRestore();
    await redis.start().catch(() => undefined); // in case a test failed mid-outage
    await api.proxy?.start().catch(() => undefined);
    await api.close();
    await redis.stop();
  });

  it('R4: with Redis down a create answers 201 within 1 s, /readyz is 503, and the job is enqueued once Redis is back', async () => {
    await redis.stop();
    await until('readyz notices', async () =>
      (await readiness()).status === 503 ? true : undefined,
    );

    const started = Date.now();
    const created = await alice.request('POST', '/v1/fine_tuning/jobs', jobBody());
    const elapsed = Date.now() - started;
    expect(created.status).toBe(201);
    expect(created.body.status).toBe('queued');
    expect(elapsed).toBeLessThan(1000);
    const id = created.body.id as string;

    const ready = await readiness();
    expect(ready.status).toBe(503);
    expect(ready.body).toMatchObject({ status: 'unavailable', checks: { postgres: 'ok' } });
    expect(ready.body.checks.redis).toMatch(/^down/);
    // Metrics still scrape; Redis shows as down and the job waits in the outbox.
    const metrics = await fetch(`${api.baseUrl}/metrics`);
    expect(metrics.status).toBe(200);
    const text = await metrics.text();
    expect(text).toContain('lorafleet_dependency_up{dependency="redis"} 0');
    expect(text).toMatch(/^lorafleet_outbox_pending [1-9]/m);
    const [entry] = await api.dataSource.query(
      'SELECT dispatched_at, attempts FROM outbox WHERE job_id = $1',
      [id],
    );
    expect(entry.dispatched_at).toBeNull();

    await redis.start(); // empty: the private server keeps no data across restarts
    const deliveries = await until(
      'relay enqueues the job',
      async () => {
        const ids = await pendingDeliveries();
        return ids.includes(id) ? ids : undefined;
      },
      15_000,
    );
    expect(deliveries.filter((d) => d === id)).toHaveLength(1);
    await until('outbox entry marked dispatched', async () => {
      const [row] = await api.dataSource.query(
        'SELECT dispatched_at FROM outbox WHERE job_id = $1',
        [id],
      );
      return row.dispatched_at ? true : undefined;
    });
    await until('ready again', async () => ((await readiness()).status === 200 ? true : undefined));
    // Relay and reconciler both run after the outage; enqueueing by job id keeps it one delivery.
    expect((await pendingDeliveries()).filter((d) => d === id)).toHaveLength(1);
  });

  it('R4: with Postgres cut off a create answers 503 in the OpenAI error shape and stores nothing; requests work once it is back', async () => {
    const jobsBefore = await count('fine_tuning_jobs');
    const outboxBefore = await count('outbox');
    const eventsBefore = await count('job_events');
    await api.proxy!.stop();

    const started = Date.now();
    const created = await alice.request('POST', '/v1/fine_tuning/jobs', jobBody(), {
      'Idempotency-Key': 'during-outage',
    });
    expect(created.status).toBe(503);
    expect(created.body).toEqual({
      error: {
        message: expect.any(String),
        type: 'server_error',
        param: null,
        code: 'service_unavailable',
      },
    });
    expect(Date.now() - started).toBeLessThan(5000);
    const read = await alice.request('GET', '/v1/fine_tuning/jobs');
    expect(read.status).toBe(503);
    expect(read.body.error.code).toBe('service_unavailable');
    const ready = await readiness();
    expect(ready.status).toBe(503);
    expect(ready.body.checks.postgres).toMatch(/^down/);
    expect(ready.body.checks.redis).toBe('ok');

    // Checked over a direct connection that bypasses the proxy.
    expect(await count('fine_tuning_jobs')).toBe(jobsBefore);
    expect(await count('outbox')).toBe(outboxBefore);
    expect(await count('job_events')).toBe(eventsBefore);

    await api.proxy!.start();
    const retried = await until('creates work again', async () => {
      const response = await alice.request('POST', '/v1/fine_tuning/jobs', jobBody(), {
        'Idempotency-Key': 'during-outage',
      });
      return response.status === 201 ? response : undefined;
    });
    expect(retried.headers.get('idempotent-replayed')).toBeNull(); // the failed try left no trace
    expect(await count('fine_tuning_jobs')).toBe(jobsBefore + 1);
    expect((await readiness()).status).toBe(200);
  });

  it('R4: when Postgres goes away in the middle of a create, the job row and its outbox entry both vanish', async () => {
    const jobsBefore = await count('fine_tuning_jobs');
    const outboxBefore = await count('outbox');
    // Hold the outbox table so the create's transaction stops between its job-row insert and
    // its outbox insert; then cut the connection right there.
    const locker = api.dataSource.createQueryRunner();
    await locker.connect();
    await locker.startTransaction();
    try {
      await locker.query('LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE');
      const pending = alice.request('POST', '/v1/fine_tuning/jobs', jobBody());
      await until('the create waits on the outbox insert', async () => {
        const rows = await api.dataSource.query(
          `SELECT 1 FROM pg_stat_activity
            WHERE datname = current_database() AND application_name = 'lorafleet-api'
              AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO "outbox"%'`,
        );
        return rows.length > 0 ? true : undefined;
      });
      await api.proxy!.stop();
      const created = await pending;
      expect(created.status).toBe(503);
      expect(created.body.error.code).toBe('service_unavailable');
    } finally {
      await locker.rollbackTransaction();
      await locker.release();
    }
    // The server aborts the orphaned transaction once it sees the client gone.
    await until('orphaned transaction ends', async () => {
      const rows = await api.dataSource.query(
        `SELECT 1 FROM pg_stat_activity
          WHERE datname = current_database() AND application_name = 'lorafleet-api'
            AND state <> 'idle'`,
      );
      return rows.length === 0 ? true : undefined;
    });
    expect(await count('fine_tuning_jobs')).toBe(jobsBefore);
    expect(await count('outbox')).toBe(outboxBefore);

    await api.proxy!.start();
    await until('creates work again', async () =>
      (await alice.request('POST', '/v1/fine_tuning/jobs', jobBody())).status === 201
        ? true
        : undefined,
    );
  });

  it('R1: a job lost by Redis (FLUSHALL) is re-enqueued by the reconciler', async () => {
    const created = await alice.request('POST', '/v1/fine_tuning/jobs', jobBody());
    expect(created.status).toBe(201);
    const id = created.body.id as string;
    await until('job in BullMQ', async () =>
      (await pendingDeliveries()).includes(id) ? true : undefined,
    );

    warn.mockClear();
    const admin = new Redis(redis.url, { maxRetriesPerRequest: 0, retryStrategy: () => null });
    try {
      expect(await admin.flushall()).toBe('OK');
    } finally {
      admin.disconnect();
    }

    await until(
      'reconciler re-enqueues the job',
      async () => ((await pendingDeliveries()).includes(id) ? true : undefined),
      15_000,
    );
    // The reconciler did it (the outbox entry was dispatched long ago, so not the relay).
    expect(
      warn.mock.calls.some(([message]) => String(message).includes(`re-enqueued job ${id}`)),
    ).toBe(true);
    // Every queued job in Postgres is back exactly once, and nothing else is.
    const queued = (
      await api.dataSource.query<{ id: string }[]>(
        "SELECT id FROM fine_tuning_jobs WHERE status = 'queued'",
      )
    ).map((r) => r.id);
    await until('all queued jobs restored', async () =>
      (await pendingDeliveries()).length === queued.length ? true : undefined,
    );
    expect((await pendingDeliveries()).sort()).toEqual(queued.sort());
  });
});
