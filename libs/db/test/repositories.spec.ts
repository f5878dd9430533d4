import { randomUUID } from 'node:crypto';
import { FineTuneSpecSchema, fineTuneDelivery } from '@lorafleet/contracts';
import type { DataSource } from 'typeorm';
import {
  AdaptersRepository,
  FilesRepository,
  JobsRepository,
  OutboxRepository,
  ApiKeysRepository,
  AttemptsRepository,
  CheckpointsRepository,
  JobEventsRepository,
  TenantsRepository,
  WorkersRepository,
  createDataSource,
  FineTuningJobEntity,
  pendingSchemaChanges,
  runMigrations,
  type NewJob,
} from '../src';
import { createScratchDatabase, type ScratchDatabase } from '@lorafleet/testing';

/** A resolved spec: the schema's defaults for everything not named. */
const SPEC = FineTuneSpecSchema.parse({
  seed: 1,
  hyperparameters: { n_epochs: 1, batch_size: 1, learning_rate_multiplier: 1 },
  lora: { r: 4, alpha: 8 },
  training: { learning_rate: 2e-4, max_seq_length: 32 },
});

describe('libs/db against a real Postgres', () => {
  let scratch: ScratchDatabase;
  let ds: DataSource;
  let jobs: JobsRepository;
  let attempts: AttemptsRepository;
  let events: JobEventsRepository;
  let adapters: AdaptersRepository;
  let tenants: TenantsRepository;
  let tenantId: string;
  let fileId: string;

  beforeAll(async () => {
    scratch = await createScratchDatabase('lorafleet_db_spec');
    ds = createDataSource({ url: scratch.url });
    await ds.initialize();
    expect(await runMigrations(ds)).toEqual([
      'InitialSchema1795943627789',
      'WorkerResults1795945892651',
      'BaseModelHash1795955175204',
      'FleetAdminKeys1796505127912',
      'WorkerMemoryUsage1796505208846',
      'FineTuneSpec1796515902332',
      'LineageSpec1796516200000',
      'FileKind1796520296176',
      'WebhookDeliveries1796524634492',
      'WorkerThroughput1796524791437',
      'WorkerThroughputMethod1796528697644',
    ]);
    jobs = new JobsRepository(ds);
    attempts = new AttemptsRepository(ds);
    events = new JobEventsRepository(ds);
    adapters = new AdaptersRepository(ds);
    tenants = new TenantsRepository(ds);
    tenantId = (await tenants.createTenant('acme')).id;
    const file = await new FilesRepository(ds).create({
      tenantId,
      filename: 'train.jsonl',
      purpose: 'fine-tune',
      content: Buffer.from('{"text":"hi"}\n'),
      status: 'processed',
      statusDetails: null,
      kind: 'sft',
      exampleCount: 1,
    });
    fileId = file.id;
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
    metadata: { team: 'a' },
    spec: SPEC,
    idempotencyKey: null,
    requestHash: null,
  });

  it('has migrations that match the entities exactly', async () => {
    expect(await pendingSchemaChanges(ds)).toEqual([]);
  });

  it('stores only a digest of API keys and revokes them at once', async () => {
    const apiKeys = new ApiKeysRepository(ds);
    const { apiKey, plaintext } = await apiKeys.issue(tenantId);
    const stored = await ds.query<{ key_hash: string }[]>(
      'SELECT key_hash FROM api_keys WHERE id = $1',
      [apiKey.id],
    );
    expect(stored[0].key_hash).not.toContain(plaintext);
    expect(await apiKeys.authenticate(plaintext)).toMatchObject({ tenantId, isAdmin: false });
    expect(await apiKeys.revoke(apiKey.id)).toBe(true);
    expect(await apiKeys.authenticate(plaintext)).toBeNull();
  });

  it('writes the job row, its status events and an outbox entry in one transaction', async () => {
    const job = await jobs.createWithOutbox(newJob(), (id) => fineTuneDelivery({ id, tenantId }));
    expect(job.status).toBe('queued');
    const pending = await new OutboxRepository(ds).pending(10);
    expect(pending.map((p) => p.jobId)).toContain(job.id);
    const written = await events.listEvents(job.id, undefined, 10);
    expect(written.map((e) => e.data?.status)).toEqual(['queued', 'validating_files']);
  });

  it('fences every attempt write with the lease token (R7)', async () => {
    const job = await jobs.createWithOutbox(newJob(), (id) => fineTuneDelivery({ id, tenantId }));
    const first = await attempts.claimAttempt(job.id, 'worker-a', 'cpu');
    expect(first?.attempt).toBe(1);
    // What the worker asked for and what its trainer got are separate columns (item 4).
    expect(first?.job).toMatchObject({ requestedBackend: 'cpu', backend: null });
    expect(await attempts.recordBackend(job.id, first!.leaseToken, 'cpu-blas')).toBe(true);
    expect(await jobs.findById(job.id)).toMatchObject({
      requestedBackend: 'cpu',
      backend: 'cpu-blas',
    });
    expect(await attempts.claimAttempt(job.id, 'worker-b', 'cpu')).toBeNull();

    // Hand the job back, as a crash recovery would, then let a second attempt claim it.
    expect(
      await jobs.transition(job.id, { from: ['running'], to: 'queued', message: 'handed back' }),
    ).toBe(true);
    const second = await attempts.claimAttempt(job.id, 'worker-b', 'cpu');
    expect(second?.attempt).toBe(2);

    const stale = first!.leaseToken;
    const progress = { step: 3, totalSteps: 10, epoch: 0.3, estimatedFinish: null };
    expect(await attempts.updateProgress(job.id, stale, progress)).toBe(false);
    expect(
      await events.appendFencedEvent(job.id, stale, { type: 'message', message: 'zombie' }),
    ).toBe(false);
    const adapter = {
      adapterConfig: { r: 4 },
      weights: Buffer.from([1, 2, 3]),
      lineage: null,
      fineTunedModel: 'ft:tiny:x::y',
      trainedTokens: 10,
    };
    expect(await adapters.completeWithAdapter(job.id, stale, adapter)).toBeNull();
    expect(await attempts.updateProgress(job.id, second!.leaseToken, progress)).toBe(true);
    expect(await adapters.completeWithAdapter(job.id, second!.leaseToken, adapter)).not.toBeNull();
    expect(await adapters.completeWithAdapter(job.id, second!.leaseToken, adapter)).toBeNull();
    expect(await adapters.countForJob(job.id)).toBe(1);
    const final = await jobs.findById(job.id);
    // Completion sets the step to the last reported total_steps (succeeded ⇒ step = total).
    expect(final).toMatchObject({
      status: 'succeeded',
      progressStep: 10,
      progressTotalSteps: 10,
      trainedTokens: 10,
    });
    expect(final?.finishedAt).toBeInstanceOf(Date);
  });

  it('stores checkpoints fenced by the lease, keeps the newest and resumes with the blob (R5, R7)', async () => {
    const checkpoints = new CheckpointsRepository(ds);
    const job = await jobs.createWithOutbox(newJob(), (id) => fineTuneDelivery({ id, tenantId }));
    expect(await checkpoints.latestCheckpoint(job.id)).toBeNull();
    const claim = await attempts.claimAttempt(job.id, 'worker-a', 'cpu');
    const save = (leaseToken: string, step: number) =>
      checkpoints.saveCheckpoint(
        job.id,
        leaseToken,
        { attempt: 1, step, metrics: { train_loss: 1 / step }, blob: Buffer.from(`state-${step}`) },
        2,
      );
    for (const step of [10, 20, 30]) expect(await save(claim!.leaseToken, step)).not.toBeNull();
    expect(await save(randomUUID(), 40)).toBeNull();

    const kept = await checkpoints.listCheckpoints(job.id, 10);
    expect(kept.map((c) => c.step)).toEqual([30, 20]);
    expect(kept[0].blob).toBeUndefined(); // listing never reads the blobs
    expect(await checkpoints.latestCheckpoint(job.id)).toMatchObject({
      id: kept[0].id,
      jobId: job.id,
      attempt: 1,
      step: 30,
      metrics: { train_loss: 1 / 30 },
      bytes: 'state-30'.length,
      blob: Buffer.from('state-30'),
    });
  });

  it("completes with step = total_steps; a late progress write cannot move a succeeded job's progress", async () => {
    const adapter = {
      adapterConfig: { r: 4 },
      weights: Buffer.from([1, 2, 3]),
      lineage: null,
      fineTunedModel: 'ft:tiny:x::late',
      trainedTokens: 10,
    };
    const progressAt = (step: number) => ({
      step,
      totalSteps: 3,
      epoch: step / 3,
      estimatedFinish: null,
    });

    // The worker's writes for steps 1 and 2 landed; the one for step 3 loses the race.
    const raced = await jobs.createWithOutbox(newJob(), (id) => fineTuneDelivery({ id, tenantId }));
    const claim = await attempts.claimAttempt(raced.id, 'worker-a', 'cpu');
    expect(await attempts.updateProgress(raced.id, claim!.leaseToken, progressAt(2))).toBe(true);
    expect(await adapters.completeWithAdapter(raced.id, claim!.leaseToken, adapter)).not.toBeNull();
    expect(await jobs.findById(raced.id)).toMatchObject({
      status: 'succeeded',
      progressStep: 3,
      progressTotalSteps: 3,
    });
    // Late writes of the finished attempt, even of an earlier step, change nothing.
    expect(await attempts.updateProgress(raced.id, claim!.leaseToken, progressAt(3))).toBe(false);
    expect(await attempts.updateProgress(raced.id, claim!.leaseToken, progressAt(1))).toBe(false);
    expect(await jobs.findById(raced.id)).toMatchObject({ progressStep: 3, progressTotalSteps: 3 });

    // The step count the trainer reports wins over the last progress write; with no progress
    // write at all it still fills both.
    const counted = await jobs.createWithOutbox(newJob(), (id) =>
      fineTuneDelivery({ id, tenantId }),
    );
    const second = await attempts.claimAttempt(counted.id, 'worker-a', 'cpu');
    expect(
      await adapters.completeWithAdapter(counted.id, second!.leaseToken, {
        ...adapter,
        fineTunedModel: 'ft:tiny:x::counted',
        totalSteps: 7,
      }),
    ).not.toBeNull();
    expect(await jobs.findById(counted.id)).toMatchObject({
      progressStep: 7,
      progressTotalSteps: 7,
    });
  });

  it('reads a job with its API key in one query, exactly as TypeORM hydrates it (R19, R20)', async () => {
    const apiKeys = new ApiKeysRepository(ds);
    const { apiKey, plaintext } = await apiKeys.issue(tenantId, { isAdmin: true });
    const job = await jobs.createWithOutbox(newJob(), (id) => fineTuneDelivery({ id, tenantId }));
    const claim = await attempts.claimAttempt(job.id, 'worker-a', 'cpu');
    await attempts.updateProgress(job.id, claim!.leaseToken, {
      step: 2,
      totalSteps: 5,
      epoch: 0.4,
      estimatedFinish: new Date('2030-01-01T00:00:00Z'),
    });

    const found = await apiKeys.authenticateWithJob(plaintext, job.id);
    expect(found?.principal).toEqual({
      tenantId,
      apiKeyId: apiKey.id,
      isAdmin: true,
      isFleetAdmin: false,
    });
    expect(found?.job).toEqual(await jobs.findForTenant(tenantId, job.id));
    expect(found?.job).toBeInstanceOf(FineTuningJobEntity);

    // The key resolves but the id does not exist for this tenant (or at all).
    const other = await tenants.createTenant('other');
    const otherKey = (await apiKeys.issue(other.id)).plaintext;
    expect(await apiKeys.authenticateWithJob(otherKey, job.id)).toEqual({
      principal: expect.objectContaining({ tenantId: other.id }),
      job: null,
    });
    expect((await apiKeys.authenticateWithJob(plaintext, 'ftjob-nope'))?.job).toBeNull();
    // Unknown and revoked keys resolve to nothing, at once.
    expect(await apiKeys.authenticateWithJob('lf-unknown', job.id)).toBeNull();
    await apiKeys.revoke(apiKey.id);
    expect(await apiKeys.authenticateWithJob(plaintext, job.id)).toBeNull();
    expect(await apiKeys.authenticate(plaintext)).toBeNull();
  });

  it('rejects illegal transitions and leaves terminal jobs alone', async () => {
    const job = await jobs.createWithOutbox(newJob(), (id) => fineTuneDelivery({ id, tenantId }));
    await expect(
      jobs.transition(job.id, { from: ['queued'], to: 'succeeded', message: 'nope' }),
    ).rejects.toThrow('illegal job transition queued → succeeded');
    expect(
      await jobs.transition(job.id, { from: ['queued'], to: 'cancelled', message: 'cancel' }),
    ).toBe(true);
    expect(
      await jobs.transition(job.id, { from: ['queued', 'running'], to: 'cancelled', message: 'x' }),
    ).toBe(false);
    const statusEvents = (await events.listEvents(job.id, undefined, 50)).filter(
      (e) => e.type === 'status',
    );
    expect(statusEvents).toHaveLength(3);
  });

  it('pages jobs newest first with metadata and status filters', async () => {
    const a = await jobs.createWithOutbox({ ...newJob(), metadata: { team: 'z' } }, (id) =>
      fineTuneDelivery({ id, tenantId }),
    );
    const b = await jobs.createWithOutbox({ ...newJob(), metadata: { team: 'z' } }, (id) =>
      fineTuneDelivery({ id, tenantId }),
    );
    const page1 = await jobs.listForTenant(tenantId, { limit: 1, metadata: { team: 'z' } });
    expect(page1.map((j) => j.id)).toEqual([b.id]);
    const page2 = await jobs.listForTenant(tenantId, {
      limit: 5,
      metadata: { team: 'z' },
      after: b.id,
    });
    expect(page2.map((j) => j.id)).toEqual([a.id]);
    // Plain SQL rows hydrate exactly as TypeORM's entities.
    expect(page1[0]).toBeInstanceOf(FineTuningJobEntity);
    expect(page1[0]).toEqual(await jobs.findForTenant(tenantId, b.id));
    const cancelled = await jobs.listForTenant(tenantId, { limit: 50, status: 'cancelled' });
    expect(cancelled.length).toBeGreaterThan(0);
    expect(cancelled.every((j) => j.status === 'cancelled')).toBe(true);
    // Every filter together; a cursor from another tenant matches nothing.
    expect(
      (
        await jobs.listForTenant(tenantId, {
          limit: 5,
          status: 'queued',
          metadata: { team: 'z' },
          after: b.id,
        })
      ).map((j) => j.id),
    ).toEqual([a.id]);
    expect(await jobs.listForTenant('org-other', { limit: 50 })).toEqual([]);
    expect(await jobs.listForTenant('org-other', { limit: 50, after: b.id })).toEqual([]);
  });
});

describe('job control queries', () => {
  let scratch: ScratchDatabase;
  let ds: DataSource;
  let jobs: JobsRepository;
  let attempts: AttemptsRepository;
  let events: JobEventsRepository;
  let tenantId: string;

  beforeAll(async () => {
    scratch = await createScratchDatabase('lorafleet_db_control');
    ds = createDataSource({ url: scratch.url });
    await ds.initialize();
    await runMigrations(ds);
    jobs = new JobsRepository(ds);
    attempts = new AttemptsRepository(ds);
    events = new JobEventsRepository(ds);
    tenantId = (await new TenantsRepository(ds).createTenant('ctl')).id;
  });

  afterAll(async () => {
    await ds.destroy();
    await scratch.drop();
  });

  const create = () =>
    jobs.createWithOutbox(
      {
        tenantId,
        model: 'tiny',
        baseModelHash: null,
        trainingFileId: 'file-x',
        validationFileId: null,
        suffix: null,
        metadata: null,
        spec: SPEC,
        idempotencyKey: null,
        requestHash: null,
      },
      (id) => fineTuneDelivery({ id, tenantId }),
    );

  it('requeues a paused job with a status event and a new outbox entry, fenced by lease', async () => {
    const outbox = new OutboxRepository(ds);
    const job = await create();
    for (const entry of await outbox.pending(100)) await outbox.markDispatched(entry.id);
    const claim = await attempts.claimAttempt(job.id, 'w', 'cpu');
    expect(await jobs.requestPause(job.id)).toBe(true);
    expect(
      await jobs.transition(job.id, {
        from: ['running'],
        to: 'paused',
        message: 'paused',
        leaseToken: claim!.leaseToken,
      }),
    ).toBe(true);
    expect(
      await jobs.requeue(
        job.id,
        {
          from: ['paused'],
          message: 'resumed',
          leaseToken: 'f5c1e0b4-0000-4000-8000-000000000000',
        },
        fineTuneDelivery(job),
      ),
    ).toBe(false);
    expect(
      await jobs.requeue(job.id, { from: ['paused'], message: 'resumed' }, fineTuneDelivery(job)),
    ).toBe(true);
    const row = await jobs.findById(job.id);
    expect(row).toMatchObject({ status: 'queued', leaseToken: null, pauseRequestedAt: null });
    expect((await outbox.pending(10)).map((e) => e.jobId)).toEqual([job.id]);
    const statuses = (await events.listEvents(job.id, undefined, 50)).map((e) => e.data?.status);
    expect(statuses.slice(0, 3)).toEqual(['queued', 'paused', 'running']);
  });

  it('records the memory a hand-back needs, and finds live workers with that much (issue 13)', async () => {
    const job = await create();
    const claim = await attempts.claimAttempt(job.id, 'w-small', 'cpu');
    expect(await attempts.memoryRequiredMb(job.id)).toBeNull();
    const handBack = (mb: number, leaseToken: string) =>
      jobs.requeue(
        job.id,
        { from: ['running'], message: 'handed back', leaseToken, memoryRequiredMb: mb },
        fineTuneDelivery(job),
      );
    expect(await handBack(900, claim!.leaseToken)).toBe(true);
    expect(await attempts.memoryRequiredMb(job.id)).toBe(900);
    expect(await jobs.findById(job.id)).toMatchObject({ status: 'queued', failures: 0 });
    // A later, smaller estimate (another backend) never lowers what is recorded.
    const again = await attempts.claimAttempt(job.id, 'w-small', 'cpu');
    expect(await handBack(500, again!.leaseToken)).toBe(true);
    expect(await attempts.memoryRequiredMb(job.id)).toBe(900);

    const workers = new WorkersRepository(ds);
    const register = (id: string, memoryLimitMb: number | null) =>
      workers.register({
        id,
        host: 'h',
        pid: 1,
        backend: 'cpu',
        device: null,
        versions: null,
        memoryLimitMb,
      });
    await register('w-small', 512);
    await register('w-big', 4096);
    await register('w-bigger', 8192);
    await register('w-stale', 65536);
    await register('w-gone', 65536);
    await register('w-unknown', null);
    await ds.query(
      "UPDATE workers SET last_heartbeat_at = now() - interval '1 minute' WHERE id = 'w-stale'",
    );
    await workers.heartbeat('w-gone', 'gone', null);
    expect(await workers.liveWithMemoryAtLeast(900, 30_000, 'w-small')).toEqual([
      { id: 'w-bigger', memoryLimitMb: 8192 },
      { id: 'w-big', memoryLimitMb: 4096 },
    ]);
    expect(await workers.liveWithMemoryAtLeast(4096, 30_000, 'w-big')).toEqual([
      { id: 'w-bigger', memoryLimitMb: 8192 },
    ]);
    expect((await workers.list()).find((w) => w.id === 'w-big')?.memoryLimitMb).toBe(4096);
  });

  it('counts active jobs and finds queued jobs the reconciler must check', async () => {
    const outbox = new OutboxRepository(ds);
    const before = await jobs.countActiveForTenant(tenantId);
    const job = await create();
    expect(await jobs.countActiveForTenant(tenantId)).toBe(before + 1);
    expect(await outbox.queuedWithoutPendingOutbox(0, 100)).not.toContain(job.id);
    for (const entry of await outbox.pending(100)) await outbox.markDispatched(entry.id);
    expect(await outbox.queuedWithoutPendingOutbox(0, 100)).toContain(job.id);
    expect(await outbox.queuedWithoutPendingOutbox(60_000, 100)).not.toContain(job.id);
  });
});
