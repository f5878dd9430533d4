/**
 * Signed webhooks (issue 20) against the real Postgres and Redis: endpoint management and its
 * errors, tenancy (R19), the secret shown once, Standard Webhooks signatures checked by an
 * independent verifier, retries with doubling backoff and the delivery log, redelivery, the
 * SSRF guard, and a crash of the sending API process between the status change and the
 * delivery.
 */
import {
  ApiKeysRepository,
  JobsRepository,
  TenantsRepository,
  createDataSource,
  runMigrations,
} from '@lorafleet/db';
import { AppProcess, createScratchDatabase, deleteQueueKeys, waitFor } from '@lorafleet/testing';
import { randomBytes } from 'node:crypto';
import {
  Client,
  GOOD_JSONL,
  MODELS_DIR,
  freePort,
  startApi,
  until,
  type ApiHarness,
} from './api-harness';
import { WebhookReceiver, verifyStandardWebhook, type ReceivedWebhook } from './webhook-receiver';

jest.setTimeout(90_000);

const EVENTS = ['fine_tuning.job.succeeded', 'fine_tuning.job.failed', 'fine_tuning.job.cancelled'];

/** Creates a queued job for `client` (no worker runs in this suite, so it stays queued). */
async function queuedJob(client: Client): Promise<string> {
  const file = await client.upload(GOOD_JSONL);
  expect(file.status).toBe(200);
  const job = await client.request('POST', '/v1/fine_tuning/jobs', {
    model: 'tiny-random-gpt2',
    training_file: file.body.id,
    hyperparameters: { n_epochs: 1 },
  });
  expect(job.status).toBe(201);
  return job.body.id as string;
}

async function expectVerified(secret: string, received: ReceivedWebhook): Promise<void> {
  expect(await verifyStandardWebhook(secret, received)).toBeNull();
}

describe('webhooks', () => {
  let api: ApiHarness;
  let alice: Client;
  let bob: Client;

  beforeAll(async () => {
    api = await startApi({
      LORAFLEET_WEBHOOK_ALLOW_PRIVATE: '1',
      LORAFLEET_WEBHOOK_RETRY_BASE_MS: '100',
      LORAFLEET_WEBHOOK_TIMEOUT_MS: '1000',
    });
    alice = new Client(
      api.baseUrl,
      (await api.apiKeys.issue((await api.tenants.createTenant('alice')).id)).plaintext,
    );
    bob = new Client(
      api.baseUrl,
      (await api.apiKeys.issue((await api.tenants.createTenant('bob')).id)).plaintext,
    );
  });

  afterAll(async () => {
    await api.close();
  });

  it('manages endpoints: the secret only on create, OpenAI-shaped 400s, lists, and 404 for other tenants', async () => {
    const created = await alice.request('POST', '/v1/webhook_endpoints', {
      url: 'http://127.0.0.1:9/hooks',
      events: ['fine_tuning.job.succeeded'],
    });
    expect(created.status).toBe(201);
    expect(created.body).toEqual({
      id: expect.stringMatching(/^we_[0-9A-Za-z]{24}$/) as unknown,
      object: 'webhook_endpoint',
      url: 'http://127.0.0.1:9/hooks',
      events: ['fine_tuning.job.succeeded'],
      secret: expect.stringMatching(/^whsec_[A-Za-z0-9+/]{43}=$/) as unknown,
      created_at: expect.any(Number) as unknown,
    });
    const id = created.body.id as string;
    const { secret: _secret, ...shown } = created.body as Record<string, unknown>;

    const retrieved = await alice.request('GET', `/v1/webhook_endpoints/${id}`);
    expect(retrieved).toMatchObject({ status: 200, body: shown });
    expect(retrieved.body).not.toHaveProperty('secret');
    const listed = await alice.request('GET', '/v1/webhook_endpoints');
    expect(listed.body).toEqual({
      object: 'list',
      data: [shown],
      has_more: false,
      first_id: id,
      last_id: id,
    });
    expect(JSON.stringify(listed.body)).not.toContain('whsec_');

    // Tenancy (R19): bob sees, reads and deletes nothing of alice's.
    expect((await bob.request('GET', '/v1/webhook_endpoints')).body.data).toEqual([]);
    for (const [method, route] of [
      ['GET', `/v1/webhook_endpoints/${id}`],
      ['DELETE', `/v1/webhook_endpoints/${id}`],
      ['GET', `/v1/webhook_endpoints/${id}/deliveries`],
      ['POST', `/v1/webhook_endpoints/${id}/deliveries/whdel_x/redeliver`],
    ]) {
      const answer = await bob.request(method, route);
      expect(answer.status).toBe(404);
      expect(answer.body.error).toMatchObject({ type: 'invalid_request_error', code: 'not_found' });
    }
    expect((await alice.request('GET', `/v1/webhook_endpoints/${id}`)).status).toBe(200);

    const bad = async (body: unknown, param: string, message: RegExp) => {
      const answer = await alice.request('POST', '/v1/webhook_endpoints', body);
      expect(answer.status).toBe(400);
      expect(answer.body.error).toMatchObject({
        type: 'invalid_request_error',
        code: 'invalid_request',
        param,
      });
      expect(answer.body.error.message).toMatch(message);
    };
    await bad({ url: 'ftp://example.com/x', events: EVENTS }, 'url', /http or https/);
    await bad({ url: 'not a url', events: EVENTS }, 'url', /http or https/);
    await bad({ events: EVENTS }, 'url', /url/);
    await bad({ url: 'https://example.com', events: [] }, 'events', /at least one/);
    await bad(
      { url: 'https://example.com', events: ['fine_tuning.job.succeeded', 'job.exploded'] },
      'events',
      /"job.exploded" is not an event type; expected one of fine_tuning\.job\.succeeded/,
    );
    // An unknown key (a client cannot choose its own secret) is refused at the body's root.
    const extra = await alice.request('POST', '/v1/webhook_endpoints', {
      url: 'https://example.com',
      events: EVENTS,
      secret: 'whsec_mine',
    });
    expect(extra.status).toBe(400);
    expect(extra.body.error).toMatchObject({ code: 'invalid_request', param: null });
    expect(extra.body.error.message).toMatch(/secret/);
    expect((await alice.request('GET', '/v1/webhook_endpoints?limit=0')).body.error.param).toBe(
      'limit',
    );

    expect(await alice.request('DELETE', `/v1/webhook_endpoints/${id}`)).toMatchObject({
      status: 200,
      body: { id, object: 'webhook_endpoint.deleted', deleted: true },
    });
    expect((await alice.request('GET', `/v1/webhook_endpoints/${id}`)).status).toBe(404);
  });

  it('signs each delivery, retries a receiver that fails 3 times with doubling delays, logs the attempts and redelivers', async () => {
    // 500, then no answer within the 1 s timeout, then 404, then 200.
    const plan: (number | 'hang')[] = [500, 'hang', 404];
    const receiver = await new WebhookReceiver((i) => plan[i] ?? 200).start();
    try {
      const endpoint = await alice.request('POST', '/v1/webhook_endpoints', {
        url: receiver.url,
        events: ['fine_tuning.job.cancelled', 'fine_tuning.job.failed'],
      });
      expect(endpoint.status).toBe(201);
      const secret = endpoint.body.secret as string;
      // Bob's endpoint for the same event must not hear of alice's job.
      const bobReceiver = await new WebhookReceiver().start();
      const bobEndpoint = await bob.request('POST', '/v1/webhook_endpoints', {
        url: bobReceiver.url,
        events: EVENTS,
      });
      expect(bobEndpoint.status).toBe(201);

      const jobId = await queuedJob(alice);
      const cancelled = await alice.request('POST', `/v1/fine_tuning/jobs/${jobId}/cancel`);
      expect(cancelled.body.status).toBe('cancelled');

      const deliveriesRoute = `/v1/webhook_endpoints/${endpoint.body.id as string}/deliveries`;
      const [delivery] = await until(
        'the delivery log shows a delivered event',
        async () => {
          const log = await alice.request('GET', deliveriesRoute);
          return log.body.data?.[0]?.status === 'delivered' ? log.body.data : undefined;
        },
        20_000,
      );
      expect(receiver.received).toHaveLength(4);
      expect(delivery).toEqual({
        id: expect.stringMatching(/^whdel_/) as unknown,
        object: 'webhook_delivery',
        endpoint_id: endpoint.body.id,
        event_id: expect.stringMatching(/^evt_[0-9A-Za-z]{24}$/) as unknown,
        event_type: 'fine_tuning.job.cancelled',
        job_id: jobId,
        status: 'delivered',
        attempts: 4,
        last_status_code: 200,
        last_error: null,
        last_attempt_at: expect.any(Number) as unknown,
        next_attempt_at: null,
        delivered_at: expect.any(Number) as unknown,
        created_at: expect.any(Number) as unknown,
      });

      const eventId = delivery.event_id as string;
      for (const received of receiver.received) {
        await expectVerified(secret, received);
        expect(received.headers['webhook-id']).toBe(eventId);
        expect(received.headers['content-type']).toBe('application/json');
        expect(JSON.parse(received.body)).toEqual({
          id: eventId,
          object: 'event',
          type: 'fine_tuning.job.cancelled',
          created_at: expect.any(Number) as unknown,
          data: { id: jobId },
        });
      }
      // Every attempt sends the same bytes.
      expect(new Set(receiver.received.map((r) => r.body)).size).toBe(1);
      // A tampered body or another endpoint's secret does not verify.
      expect(
        await verifyStandardWebhook(secret, { ...receiver.received[0], body: '{"id":"x"}' }),
      ).toMatch(/no v1 signature/);
      expect(
        await verifyStandardWebhook(bobEndpoint.body.secret as string, receiver.received[0]),
      ).toMatch(/no v1 signature/);
      // Backoff 100, 200, 400 ms (base 100 ms, doubling); the second attempt also waited out
      // its 1 s timeout, which starts a few ms before the receiver has read the request.
      const gaps = receiver.received.slice(1).map((r, i) => r.at - receiver.received[i].at);
      expect(gaps[0]).toBeGreaterThanOrEqual(100);
      expect(gaps[1]).toBeGreaterThanOrEqual(1000 - 50 + 200);
      expect(gaps[2]).toBeGreaterThanOrEqual(400);
      expect(bobReceiver.received).toEqual([]);
      await bobReceiver.close();

      // Redeliver: a new delivery of the same event (same webhook-id), sent at once.
      const redelivered = await alice.request(
        'POST',
        `${deliveriesRoute}/${delivery.id as string}/redeliver`,
      );
      expect(redelivered.status).toBe(202);
      expect(redelivered.body).toMatchObject({
        object: 'webhook_delivery',
        event_id: eventId,
        status: 'pending',
        attempts: 0,
      });
      expect(redelivered.body.id).not.toBe(delivery.id);
      await until('the redelivery arrives', () =>
        Promise.resolve(receiver.received.length === 5 ? true : undefined),
      );
      await expectVerified(secret, receiver.received[4]);
      expect(receiver.received[4].headers['webhook-id']).toBe(eventId);
      const copy = await until('the redelivery is logged as delivered', async () => {
        const answer = await alice.request(
          'GET',
          `${deliveriesRoute}/${redelivered.body.id as string}`,
        );
        return answer.body.status === 'delivered' ? answer.body : undefined;
      });
      expect(copy).toMatchObject({ attempts: 1, last_status_code: 200 });
      const log = await alice.request('GET', `${deliveriesRoute}?limit=1`);
      expect(log.body).toMatchObject({ has_more: true, data: [{ id: redelivered.body.id }] });
      // A pending delivery is not redelivered: it is retried on its own.
      const unknown = await alice.request('POST', `${deliveriesRoute}/whdel_nope/redeliver`);
      expect(unknown.status).toBe(404);
      expect(unknown.body.error.param).toBe('delivery_id');

      const metrics = await fetch(`${api.baseUrl}/metrics`).then((r) => r.text());
      expect(metrics).toMatch(/lorafleet_webhook_delivery_attempts_total\{outcome="failed"\} 3/);
      expect(metrics).toMatch(/lorafleet_webhook_delivery_attempts_total\{outcome="delivered"\} 2/);
    } finally {
      await receiver.close();
    }
  });

  it('refuses URLs that resolve to private or loopback addresses unless allowed (SSRF guard)', async () => {
    const guarded = await startApi({ LORAFLEET_WEBHOOK_RETRY_BASE_MS: '100' });
    try {
      const client = new Client(
        guarded.baseUrl,
        (await guarded.apiKeys.issue((await guarded.tenants.createTenant('carol')).id)).plaintext,
      );
      for (const [url, shown] of [
        ['http://127.0.0.1:8080/hook', '127.0.0.1, a loopback address'],
        ['http://localhost/hook', 'loopback address'],
        ['https://10.1.2.3/hook', '10.1.2.3, a private address'],
        ['http://169.254.169.254/latest/meta-data', 'link-local address'],
        ['http://[::ffff:127.0.0.1]/hook', 'loopback address'],
        ['http://[fd00::1]/hook', 'unique-local address'],
        ['http://100.64.0.1/hook', 'shared (CGNAT) address'],
        ['http://0.0.0.0/hook', 'unspecified address'],
      ]) {
        const answer = await client.request('POST', '/v1/webhook_endpoints', {
          url,
          events: EVENTS,
        });
        expect({ url, status: answer.status }).toEqual({ url, status: 400 });
        expect(answer.body.error).toMatchObject({ code: 'invalid_request', param: 'url' });
        expect(answer.body.error.message).toContain(shown);
      }
      expect((await client.request('GET', '/v1/webhook_endpoints')).body.data).toEqual([]);
    } finally {
      await guarded.close();
    }
  });

  it('loses nothing when the sending API process dies between the status change and the delivery', async () => {
    const scratch = await createScratchDatabase('lorafleet_api_webhook_crash');
    const dataSource = createDataSource({ url: scratch.url });
    await dataSource.initialize();
    await runMigrations(dataSource);
    const prefix = `lf-wh-${randomBytes(4).toString('hex')}`;
    const port = await freePort();
    const env = {
      DATABASE_URL: scratch.url,
      REDIS_URL: api.env.REDIS_URL,
      LORAFLEET_MODELS_DIR: MODELS_DIR,
      LORAFLEET_QUEUE_PREFIX: prefix,
      LORAFLEET_MIN_EXAMPLES: '2',
      LORAFLEET_OUTBOX_POLL_MS: '100',
      LORAFLEET_LOG_LEVEL: 'error',
      LORAFLEET_WEBHOOK_ALLOW_PRIVATE: '1',
      LORAFLEET_WEBHOOK_RETRY_BASE_MS: '100',
      // The claim's lease is twice this: a delivery whose sender died is retried after 2 s.
      LORAFLEET_WEBHOOK_TIMEOUT_MS: '1000',
      HOST: '127.0.0.1',
      PORT: String(port),
    };
    const tenant = await new TenantsRepository(dataSource).createTenant('dave');
    const client = new Client(
      `http://127.0.0.1:${port}`,
      (await new ApiKeysRepository(dataSource).issue(tenant.id)).plaintext,
    );
    const ready = () =>
      waitFor(
        'api process ready',
        async () =>
          (await client.request('GET', '/healthz').catch(() => null))?.status === 200
            ? true
            : undefined,
        30_000,
        100,
      );
    // The first request hangs: the process is killed while it is in flight.
    const receiver = await new WebhookReceiver((i) => (i === 0 ? 'hang' : 200)).start();
    let apiProcess = new AppProcess('api', env);
    try {
      await ready();
      const endpoint = await client.request('POST', '/v1/webhook_endpoints', {
        url: receiver.url,
        events: ['fine_tuning.job.cancelled', 'fine_tuning.job.failed'],
      });
      expect(endpoint.status).toBe(201);
      const secret = endpoint.body.secret as string;
      const sentWhileSending = await queuedJob(client);
      const droppedWhileDown = await queuedJob(client);

      // 1. The status change commits with its event; the sender dies mid-send.
      expect(
        (await client.request('POST', `/v1/fine_tuning/jobs/${sentWhileSending}/cancel`)).body
          .status,
      ).toBe('cancelled');
      await until('the first attempt is in flight', () =>
        Promise.resolve(receiver.received.length === 1 ? true : undefined),
      );
      apiProcess.signal('SIGKILL');
      await apiProcess.waitForExit();

      // 2. With no API process at all, a worker fails a job: the same repository call the
      // worker's processor makes, committing the status and its event in one transaction.
      expect(
        await new JobsRepository(dataSource).transition(droppedWhileDown, {
          from: ['queued'],
          to: 'failed',
          message: 'Fine-tuning job failed: worker gave up',
        }),
      ).toBe(true);
      expect(receiver.received).toHaveLength(1);

      // 3. A new API process sends both: the interrupted one again, with the same webhook-id,
      // once its lease runs out; the other exactly once.
      apiProcess = new AppProcess('api', env);
      await ready();
      await until(
        'both events delivered',
        async () => {
          const log = await client.request(
            'GET',
            `/v1/webhook_endpoints/${endpoint.body.id as string}/deliveries`,
          );
          const data = log.body.data as { status: string }[];
          return data.length === 2 && data.every((d) => d.status === 'delivered')
            ? data
            : undefined;
        },
        20_000,
      );
      const byJob = (jobId: string) =>
        receiver.received.filter(
          (r) => (JSON.parse(r.body) as { data: { id: string } }).data.id === jobId,
        );
      const interrupted = byJob(sentWhileSending);
      expect(interrupted).toHaveLength(2);
      expect(interrupted[1].headers['webhook-id']).toBe(interrupted[0].headers['webhook-id']);
      expect(interrupted[1].body).toBe(interrupted[0].body);
      const dropped = byJob(droppedWhileDown);
      expect(dropped).toHaveLength(1);
      expect(JSON.parse(dropped[0].body)).toMatchObject({ type: 'fine_tuning.job.failed' });
      for (const received of receiver.received) await expectVerified(secret, received);
    } finally {
      await apiProcess.stop();
      await receiver.close();
      await deleteQueueKeys(api.env.REDIS_URL, prefix);
      await dataSource.destroy();
      await scratch.drop();
    }
  });
});
