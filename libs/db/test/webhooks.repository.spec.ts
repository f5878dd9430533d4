/**
 * Webhooks in libs/db (issue 20): the event row commits with the terminal status change (the
 * outbox promise), the dispatcher's claim, lease and fenced outcome writes, redelivery,
 * tenancy (R19), and the migration's down step.
 */
import { randomUUID } from 'node:crypto';
import { FineTuneSpecSchema, fineTuneDelivery } from '@lorafleet/contracts';
import { createScratchDatabase, type ScratchDatabase } from '@lorafleet/testing';
import { DataSource, type MigrationInterface } from 'typeorm';
import {
  AdaptersRepository,
  AttemptsRepository,
  FilesRepository,
  JobsRepository,
  TenantsRepository,
  WebhooksRepository,
  dataSourceOptions,
  runMigrations,
  type NewJob,
} from '../src';
import { ALL_MIGRATIONS } from '../src/migrations';

const MIGRATION = 'WebhookDeliveries1796524634492';
const SPEC = FineTuneSpecSchema.parse({
  seed: 1,
  hyperparameters: { n_epochs: 1, batch_size: 1, learning_rate_multiplier: 1 },
  lora: { r: 4, alpha: 8 },
  training: { learning_rate: 2e-4, max_seq_length: 32 },
});

describe('webhook endpoints and deliveries against a real Postgres', () => {
  let scratch: ScratchDatabase;
  let ds: DataSource;
  let jobs: JobsRepository;
  let webhooks: WebhooksRepository;
  let tenantId: string;
  let otherTenantId: string;
  let fileId: string;

  beforeAll(async () => {
    scratch = await createScratchDatabase('lorafleet_db_webhooks');
    // Migrations up to this suite's own, so that undoing the last one undoes it even after
    // later migrations are added.
    const all = ALL_MIGRATIONS as unknown as (new () => MigrationInterface)[];
    const own = all.findIndex((m) => m.name === MIGRATION);
    ds = new DataSource({
      ...dataSourceOptions({ url: scratch.url }),
      migrations: all.slice(0, own + 1),
    });
    await ds.initialize();
    await runMigrations(ds);
    jobs = new JobsRepository(ds);
    webhooks = new WebhooksRepository(ds);
    const tenants = new TenantsRepository(ds);
    tenantId = (await tenants.createTenant('hooks')).id;
    otherTenantId = (await tenants.createTenant('other')).id;
    fileId = (
      await new FilesRepository(ds).create({
        tenantId,
        filename: 'train.jsonl',
        purpose: 'fine-tune',
        content: Buffer.from('{"text":"hi"}\n'),
        status: 'processed',
        statusDetails: null,
        kind: 'sft',
        exampleCount: 1,
      })
    ).id;
  });

  afterAll(async () => {
    await ds.destroy();
    await scratch.drop();
  });

  const newJob = (): NewJob => ({
    tenantId,
    model: 'tiny',
    baseModelHash: 'a'.repeat(64),
    trainingFileId: fileId,
    validationFileId: null,
    suffix: null,
    metadata: null,
    spec: SPEC,
    idempotencyKey: null,
    requestHash: null,
  });
  const createJob = () =>
    jobs.createWithOutbox(newJob(), (id) => fineTuneDelivery({ id, tenantId }));
  const deliveriesOfJob = (jobId: string) =>
    ds.query<{ endpoint_id: string; event_id: string; event_type: string; body: string }[]>(
      'SELECT endpoint_id, event_id, event_type, body FROM webhook_deliveries WHERE job_id = $1',
      [jobId],
    );

  it('writes one delivery per subscribed endpoint of the tenant with the terminal status change', async () => {
    const cancelHook = await webhooks.createEndpoint(tenantId, 'https://a.example/hook', [
      'fine_tuning.job.cancelled',
    ]);
    const succeededHook = await webhooks.createEndpoint(tenantId, 'https://b.example/hook', [
      'fine_tuning.job.succeeded',
      'fine_tuning.job.failed',
    ]);
    // Another tenant's endpoint subscribed to everything never hears of this tenant's jobs.
    await webhooks.createEndpoint(otherTenantId, 'https://c.example/hook', [
      'fine_tuning.job.succeeded',
      'fine_tuning.job.failed',
      'fine_tuning.job.cancelled',
    ]);
    expect(cancelHook.secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(Buffer.from(cancelHook.secret.slice('whsec_'.length), 'base64')).toHaveLength(32);

    const cancelled = await createJob();
    expect(await deliveriesOfJob(cancelled.id)).toEqual([]);
    const moved = await jobs.transition(cancelled.id, {
      from: ['queued'],
      to: 'cancelled',
      message: 'cancelled',
    });
    expect(moved).toBe(true);
    const [delivery, ...more] = await deliveriesOfJob(cancelled.id);
    expect(more).toEqual([]);
    expect(delivery).toMatchObject({
      endpoint_id: cancelHook.id,
      event_type: 'fine_tuning.job.cancelled',
    });
    expect(delivery.event_id).toMatch(/^evt_[0-9A-Za-z]{24}$/);
    expect(JSON.parse(delivery.body)).toEqual({
      id: delivery.event_id,
      object: 'event',
      type: 'fine_tuning.job.cancelled',
      created_at: expect.any(Number) as unknown,
      data: { id: cancelled.id },
    });

    // A refused transition (the job already moved on) writes no event.
    expect(
      await jobs.transition(cancelled.id, { from: ['queued'], to: 'failed', message: 'late' }),
    ).toBe(false);
    expect(await deliveriesOfJob(cancelled.id)).toHaveLength(1);

    // Success is written by the lease-fenced completion, in its transaction.
    const succeeded = await createJob();
    const claim = await new AttemptsRepository(ds).claimAttempt(succeeded.id, 'worker-w', 'cpu');
    const adapters = new AdaptersRepository(ds);
    const adapter = {
      adapterConfig: {},
      weights: Buffer.from([1, 2, 3]),
      lineage: null,
      fineTunedModel: 'ft:tiny:x::y',
      trainedTokens: 3,
    };
    expect(await adapters.completeWithAdapter(succeeded.id, randomUUID(), adapter)).toBeNull();
    expect(await deliveriesOfJob(succeeded.id)).toEqual([]);
    expect(
      await adapters.completeWithAdapter(succeeded.id, claim!.leaseToken, adapter),
    ).not.toBeNull();
    expect(await deliveriesOfJob(succeeded.id)).toMatchObject([
      { endpoint_id: succeededHook.id, event_type: 'fine_tuning.job.succeeded' },
    ]);

    // Statuses that are not terminal emit nothing.
    const requeued = await createJob();
    await jobs.transition(requeued.id, { from: ['queued'], to: 'running', message: 'run' });
    expect(await deliveriesOfJob(requeued.id)).toEqual([]);
  });

  it('claims due deliveries once, fences outcomes by attempt, backs off and gives up', async () => {
    const endpoint = await webhooks.createEndpoint(tenantId, 'https://d.example/hook', [
      'fine_tuning.job.failed',
    ]);
    const job = await createJob();
    await jobs.transition(job.id, { from: ['queued'], to: 'failed', message: 'boom' });
    const claimAll = async () =>
      (await webhooks.claimDue(100, 60_000)).filter((d) => d.endpointId === endpoint.id);

    const [first] = await claimAll();
    expect(first).toMatchObject({
      url: 'https://d.example/hook',
      secret: endpoint.secret,
      attempt: 1,
    });
    // Leased: a second dispatcher pass finds nothing due.
    expect(await claimAll()).toEqual([]);
    expect(
      await webhooks.recordFailure(first.id, 1, {
        statusCode: 500,
        error: 'HTTP 500',
        retryDelayMs: 0,
        maxAgeMs: 3_600_000,
      }),
    ).toBe('pending');
    const [second] = await claimAll();
    expect(second.attempt).toBe(2);
    // The first attempt's late outcome no longer applies.
    expect(await webhooks.recordDelivered(first.id, 1, 200)).toBe(false);
    // A retry that would start after the window ends marks the delivery failed.
    expect(
      await webhooks.recordFailure(second.id, 2, {
        statusCode: null,
        error: 'connect ECONNREFUSED',
        retryDelayMs: 10_000,
        maxAgeMs: 5_000,
      }),
    ).toBe('failed');
    const log = await webhooks.listDeliveries(tenantId, endpoint.id, undefined, 10);
    expect(log.rows).toMatchObject([
      {
        id: first.id,
        status: 'failed',
        attempts: 2,
        lastStatusCode: null,
        lastError: 'connect ECONNREFUSED',
        nextAttemptAt: null,
        deliveredAt: null,
      },
    ]);

    // Redelivery: a new log entry with the same event and bytes, due now.
    const copy = await webhooks.redeliver(tenantId, endpoint.id, first.id);
    if (copy === null || copy === 'pending') throw new Error(`redeliver answered ${copy}`);
    expect(copy).toMatchObject({ eventId: first.eventId, body: first.body, status: 'pending' });
    expect(await webhooks.redeliver(tenantId, endpoint.id, copy.id)).toBe('pending');
    const [third] = await claimAll();
    expect(third).toMatchObject({ id: copy.id, attempt: 1 });
    expect(await webhooks.recordDelivered(third.id, 1, 204)).toBe(true);
    expect(await webhooks.findDelivery(tenantId, endpoint.id, copy.id)).toMatchObject({
      status: 'delivered',
      lastStatusCode: 204,
      nextAttemptAt: null,
    });
    const page = await webhooks.listDeliveries(tenantId, endpoint.id, undefined, 1);
    expect(page).toMatchObject({ hasMore: true, rows: [{ id: copy.id }] });
    const next = await webhooks.listDeliveries(tenantId, endpoint.id, copy.id, 1);
    expect(next).toMatchObject({ hasMore: false, rows: [{ id: first.id }] });

    // Tenancy (R19): the other tenant sees, redelivers and deletes nothing.
    expect(await webhooks.findEndpoint(otherTenantId, endpoint.id)).toBeNull();
    expect(await webhooks.redeliver(otherTenantId, endpoint.id, first.id)).toBeNull();
    expect((await webhooks.listDeliveries(otherTenantId, endpoint.id, undefined, 10)).rows).toEqual(
      [],
    );
    expect(await webhooks.deleteEndpoint(otherTenantId, endpoint.id)).toBe(false);
    // Deleting the endpoint takes its log with it.
    expect(await webhooks.deleteEndpoint(tenantId, endpoint.id)).toBe(true);
    expect(
      await ds.query('SELECT id FROM webhook_deliveries WHERE endpoint_id = $1', [endpoint.id]),
    ).toEqual([]);
  });

  it('drops both tables going down and recreates them going up', async () => {
    await ds.undoLastMigration({ transaction: 'each' });
    const tables = async () =>
      (
        await ds.query<{ table_name: string }[]>(
          "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'webhook%'",
        )
      )
        .map((t) => t.table_name)
        .sort();
    expect(await tables()).toEqual([]);
    // The jobs whose events the tables held are untouched.
    expect(
      Number((await ds.query<{ n: string }[]>('SELECT count(*) AS n FROM fine_tuning_jobs'))[0].n),
    ).toBeGreaterThan(0);
    expect(await runMigrations(ds)).toEqual([MIGRATION]);
    expect(await tables()).toEqual(['webhook_deliveries', 'webhook_endpoints']);
  });
});
