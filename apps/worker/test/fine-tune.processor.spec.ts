/**
 * The processor's one decision: how a trainer run ended (`TrainerOutcome`) → what happens to
 * the job. Each test plays a scripted trainer child (the real `TrainerProcess` over an
 * in-process script, see scripted-trainer-child.ts) against an in-memory job store with the
 * repository's fencing and transition rules, and checks the job row, its events and the
 * outbox afterwards.
 */
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import {
  isLegalJobTransition,
  workerEnvShape,
  type JobStatus,
  type QueueDelivery,
  type WorkerEnv,
} from '@lorafleet/contracts';
import {
  AdapterEntity,
  CheckpointEntity,
  FineTuningJobEntity,
  type ClaimedAttempt,
  type JsonObject,
  type NewJobEvent,
  type ThroughputSample,
  type TransitionRequest,
} from '@lorafleet/db';
import { UnrecoverableError } from 'bullmq';
import type { AttemptFiles, AttemptJobs, AttemptWorkers } from '../src/processor/attempt-ports';
import { FineTuneProcessor } from '../src/processor/fine-tune.processor';
import type { TrainerFailure } from '../src/trainer/trainer-protocol';
import {
  TEST_SPEC,
  scriptedTrainerChild,
  stopCheckpoint,
  trainerResult,
  type ScriptStep,
  type ScriptedChildOptions,
} from './scripted-trainer-child';

const JOB_ID = 'ftjob-1';
const TENANT_ID = 'tenant-1';
const TRAINING_FILE = 'file-train';
const MODEL = 'tiny';

interface StoredEvent extends NewJobEvent {
  leaseToken?: string;
}

interface OutboxEntry {
  payload: JsonObject;
  delayMs: number;
}

/**
 * One job row in memory with JobsRepository's rules: attempt writes are fenced by the lease
 * token, transitions must be legal, a requeue clears the lease and writes an outbox entry.
 */
class InMemoryJobs implements AttemptJobs {
  readonly row = new FineTuningJobEntity();
  readonly events: StoredEvent[] = [];
  readonly checkpoints: CheckpointEntity[] = [];
  readonly outbox: OutboxEntry[] = [];
  adapter: AdapterEntity | null = null;
  /** Set to make storing the result fail the way a non-transient database error does. */
  completionError: Error | null = null;

  constructor() {
    Object.assign(this.row, {
      id: JOB_ID,
      tenantId: TENANT_ID,
      model: MODEL,
      baseModelHash: null,
      status: 'queued',
      trainingFileId: TRAINING_FILE,
      validationFileId: null,
      suffix: null,
      spec: TEST_SPEC,
      attempt: 0,
      failures: 0,
      leaseToken: null,
      error: null,
      memoryRequiredMb: null,
      pauseRequestedAt: null,
    } satisfies Partial<FineTuningJobEntity>);
  }

  private holds(leaseToken: string | undefined): boolean {
    return leaseToken === undefined || this.row.leaseToken === leaseToken;
  }

  claimAttempt(jobId: string, workerId: string): Promise<ClaimedAttempt | null> {
    if (jobId !== JOB_ID || this.row.status !== 'queued') return Promise.resolve(null);
    this.row.status = 'running';
    this.row.attempt += 1;
    this.row.leaseToken = `lease-${this.row.attempt}`;
    this.row.workerId = workerId;
    return Promise.resolve({
      job: Object.assign(new FineTuningJobEntity(), this.row),
      leaseToken: this.row.leaseToken,
      attempt: this.row.attempt,
      takeover: false,
    });
  }

  memoryRequiredMb(): Promise<number | null> {
    return Promise.resolve(this.row.memoryRequiredMb);
  }

  findById(): Promise<FineTuningJobEntity | null> {
    return Promise.resolve(Object.assign(new FineTuningJobEntity(), this.row));
  }

  latestCheckpoint(): Promise<CheckpointEntity | null> {
    return Promise.resolve(this.checkpoints.at(-1) ?? null);
  }

  recordBackend(_jobId: string, leaseToken: string, backend: string): Promise<boolean> {
    if (!this.holds(leaseToken)) return Promise.resolve(false);
    this.row.backend = backend;
    return Promise.resolve(true);
  }

  appendFencedEvent(_jobId: string, leaseToken: string, event: NewJobEvent): Promise<boolean> {
    if (!this.holds(leaseToken)) return Promise.resolve(false);
    this.events.push({ ...event, leaseToken });
    return Promise.resolve(true);
  }

  updateProgress(_jobId: string, leaseToken: string, progress: { step: number }): Promise<boolean> {
    if (!this.holds(leaseToken) || this.row.status !== 'running') return Promise.resolve(false);
    this.row.progressStep = progress.step;
    return Promise.resolve(true);
  }

  saveCheckpoint(
    jobId: string,
    leaseToken: string,
    checkpoint: { attempt: number; step: number; blob: Buffer },
  ): Promise<string | null> {
    if (!this.holds(leaseToken) || this.row.status !== 'running') return Promise.resolve(null);
    const id = `checkpoint-${this.checkpoints.length + 1}`;
    this.checkpoints.push(Object.assign(new CheckpointEntity(), { id, jobId, ...checkpoint }));
    return Promise.resolve(id);
  }

  completeWithAdapter(
    jobId: string,
    leaseToken: string,
    adapter: { weights: Buffer; fineTunedModel: string },
  ): Promise<AdapterEntity | null> {
    if (this.completionError) return Promise.reject(this.completionError);
    if (!this.holds(leaseToken) || this.row.status !== 'running') return Promise.resolve(null);
    this.adapter = Object.assign(new AdapterEntity(), {
      id: 'adapter-1',
      jobId,
      weights: adapter.weights,
      fineTunedModel: adapter.fineTunedModel,
    });
    this.setStatus('succeeded', 'Fine-tuning job succeeded');
    this.row.leaseToken = null;
    return Promise.resolve(this.adapter);
  }

  transition(_jobId: string, request: TransitionRequest): Promise<boolean> {
    for (const from of request.from) {
      if (!isLegalJobTransition(from, request.to))
        throw new Error(`illegal job transition ${from} → ${request.to}`);
    }
    if (!request.from.includes(this.row.status) || !this.holds(request.leaseToken))
      return Promise.resolve(false);
    Object.assign(this.row, request.set ?? {});
    this.setStatus(request.to, request.message, request.eventData);
    return Promise.resolve(true);
  }

  requeue(
    _jobId: string,
    request: Parameters<AttemptJobs['requeue']>[1],
    { payload }: QueueDelivery,
  ): Promise<boolean> {
    if (!request.from.includes(this.row.status) || !this.holds(request.leaseToken))
      return Promise.resolve(false);
    this.row.leaseToken = null;
    this.row.pauseRequestedAt = null;
    if (request.countFailure) this.row.failures += 1;
    if (request.memoryRequiredMb !== undefined) {
      this.row.memoryRequiredMb = Math.max(
        this.row.memoryRequiredMb ?? 0,
        request.memoryRequiredMb,
      );
    }
    this.setStatus('queued', request.message, request.eventData);
    this.outbox.push({ payload, delayMs: request.delayMs ?? 0 });
    return Promise.resolve(true);
  }

  private setStatus(to: JobStatus, message: string, data?: JsonObject): void {
    if (!isLegalJobTransition(this.row.status, to))
      throw new Error(`illegal job transition ${this.row.status} → ${to}`);
    this.events.push({ type: 'status', message, data: { ...data, status: to } });
    this.row.status = to;
  }
}

/** The other workers of the fleet, as the registry reports them. */
class FleetRegistry implements AttemptWorkers {
  ableWorkers: { id: string; memoryLimitMb: number }[] = [];
  throughput: ThroughputSample[] = [];
  throughputError: Error | null = null;

  recordThroughput(sample: ThroughputSample): Promise<void> {
    if (this.throughputError) return Promise.reject(this.throughputError);
    this.throughput.push(sample);
    return Promise.resolve();
  }

  heartbeat(): Promise<void> {
    return Promise.resolve();
  }

  liveWithMemoryAtLeast(memoryMb: number): Promise<{ id: string; memoryLimitMb: number }[]> {
    return Promise.resolve(this.ableWorkers.filter((w) => w.memoryLimitMb >= memoryMb));
  }
}

const files: AttemptFiles = {
  getContent: (_tenantId, id) =>
    Promise.resolve(id === TRAINING_FILE ? Buffer.from('{"prompt":"a","completion":"b"}\n') : null),
};

let modelsDir: string;

beforeAll(async () => {
  modelsDir = await mkdtemp(path.join(tmpdir(), 'processor-models-'));
  await mkdir(path.join(modelsDir, MODEL));
  await writeFile(path.join(modelsDir, MODEL, 'config.json'), '{"model_type":"gpt2"}');
  await writeFile(path.join(modelsDir, MODEL, 'model.safetensors'), 'weights');
});

afterAll(() => rm(modelsDir, { recursive: true, force: true }));

function workerEnv(overrides: Record<string, string> = {}): WorkerEnv {
  return z.object(workerEnvShape).parse({
    // Never connected to: the repositories here are in memory.
    DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/unused',
    REDIS_URL: 'redis://127.0.0.1:6379',
    LORAFLEET_MODELS_DIR: modelsDir,
    LORAFLEET_CONTROL_POLL_MS: '100',
    LORAFLEET_WATCHDOG_MS: '1000',
    LORAFLEET_MAX_ATTEMPTS: '3',
    LORAFLEET_RETRY_BACKOFF_MS: '1000',
    LORAFLEET_SHUTDOWN_GRACE_MS: '1000',
    LORAFLEET_CHECKPOINT_KEEP: '2',
    ...overrides,
  });
}

interface Harness {
  jobs: InMemoryJobs;
  fleet: FleetRegistry;
  /** The kinds of the messages the processor's trainer sent the child. */
  received: NonNullable<ScriptedChildOptions['received']>;
  processor: FineTuneProcessor;
  /** One delivery of the job, as BullMQ makes it. */
  deliver(): Promise<void>;
}

function harness(
  script: readonly ScriptStep[],
  { env = workerEnv(), ignoresStop }: { env?: WorkerEnv } & ScriptedChildOptions = {},
): Harness {
  const jobs = new InMemoryJobs();
  const fleet = new FleetRegistry();
  const received: NonNullable<ScriptedChildOptions['received']> = [];
  const processor = new FineTuneProcessor(
    jobs,
    files,
    fleet,
    env,
    { id: 'worker-a', host: 'test', pid: process.pid },
    scriptedTrainerChild(script, { ignoresStop, received }),
  );
  const deliver = () =>
    processor.process({
      data: { schemaVersion: 1, jobId: JOB_ID, tenantId: TENANT_ID },
      moveToDelayed: () => Promise.reject(new Error('not delayed in these tests')),
    });
  return { jobs, fleet, received, processor, deliver };
}

const ready: ScriptStep = { kind: 'ready', backend: 'cpu', resumedFromStep: null };
const failWith = (failure: TrainerFailure): ScriptStep[] => [
  ready,
  { kind: 'error', failure },
  { exit: 1 },
];
const statusTrail = (jobs: InMemoryJobs) =>
  jobs.events.filter((e) => e.type === 'status').map((e) => e.data?.status);

describe('FineTuneProcessor: each trainer outcome decides the attempt', () => {
  it('succeeded: stores the checkpoint, then the adapter, and the job succeeds', async () => {
    const { jobs, fleet, deliver } = harness([
      ready,
      {
        kind: 'progress',
        progress: {
          step: 1,
          totalSteps: 4,
          epoch: 0.25,
          loss: 1.5,
          meanTokenAccuracy: 0.1,
          learningRate: 2e-4,
          tokensPerSecond: 10,
          etaSeconds: 3,
        },
      },
      {
        kind: 'checkpoint',
        checkpoint: { step: 2, epoch: 0.5, metrics: {}, blob: Uint8Array.of(1) },
      },
      { kind: 'result', result: trainerResult() },
    ]);
    await deliver();
    expect(jobs.row).toMatchObject({ status: 'succeeded', leaseToken: null, failures: 0 });
    expect(statusTrail(jobs)).toEqual(['succeeded']);
    expect(jobs.checkpoints.map((c) => [c.attempt, c.step])).toEqual([[1, 2]]);
    expect(Array.from(jobs.adapter?.weights ?? [])).toEqual([7, 7, 7]);
    expect(jobs.events.map((e) => e.message)).toEqual(
      expect.arrayContaining(['Trainer started on backend cpu', 'Step 1/4: training loss=1.5000']),
    );
    expect(jobs.outbox).toEqual([]);
    // The attempt's speed, for the job estimate's wall times (issue 20).
    expect(fleet.throughput).toEqual([
      {
        baseModel: MODEL,
        method: 'supervised',
        backend: 'cpu',
        workerId: 'worker-a',
        jobId: JOB_ID,
        attempt: 1,
        tokensPerSecond: 12,
        trainedTokens: trainerResult().trainedTokens,
      },
    ]);
  });

  it('succeeded, but its speed cannot be recorded: the job still succeeds', async () => {
    const { jobs, fleet, deliver } = harness([ready, { kind: 'result', result: trainerResult() }]);
    fleet.throughputError = new Error('relation "worker_throughput" does not exist');
    await deliver();
    expect(jobs.row).toMatchObject({ status: 'succeeded', failures: 0 });
    expect(fleet.throughput).toEqual([]);
  });

  it('succeeded, but the result cannot be stored: the attempt fails and is retried', async () => {
    const { jobs, deliver } = harness([ready, { kind: 'result', result: trainerResult() }]);
    jobs.completionError = new Error('value too long for type');
    await deliver();
    expect(jobs.row).toMatchObject({ status: 'queued', failures: 1 });
    expect(jobs.adapter).toBeNull();
    expect(jobs.events.at(-1)?.data).toMatchObject({
      reason: 'retry',
      error: 'value too long for type',
    });
  });

  it('failed, not retryable: the job fails once with the code and the request field', async () => {
    const { jobs, deliver } = harness(
      failWith({ kind: 'invalid_input', message: 'lr too big', param: 'training.learning_rate' }),
    );
    await deliver();
    expect(jobs.row).toMatchObject({
      status: 'failed',
      leaseToken: null,
      failures: 0,
      error: { code: 'invalid_input', message: 'lr too big', param: 'training.learning_rate' },
    });
    expect(statusTrail(jobs)).toEqual(['failed']);
    expect(jobs.outbox).toEqual([]);
  });

  it('failed, out of memory mid-run: fails once as insufficient_memory', async () => {
    const { jobs, deliver } = harness([ready, { exit: 134, stderr: 'Aborted()' }]);
    await deliver();
    expect(jobs.row.status).toBe('failed');
    expect(jobs.row.error?.code).toBe('insufficient_memory');
    expect(jobs.row.error?.message).not.toMatch(/Aborted/);
  });

  it('failed over the memory limit: handed to a worker with enough, else failed once', async () => {
    const refusal = failWith({
      kind: 'memory_limit',
      message: 'needs about 5,000 MiB but the memory limit is 4,096 MiB.',
      param: null,
      estimateMb: 5000,
      limitMb: 4096,
    });
    const handed = harness(refusal);
    handed.fleet.ableWorkers = [{ id: 'worker-big', memoryLimitMb: 8192 }];
    await handed.deliver();
    expect(handed.jobs.row).toMatchObject({
      status: 'queued',
      failures: 0,
      memoryRequiredMb: 5000,
    });
    expect(handed.jobs.events.at(-1)?.data).toMatchObject({
      reason: 'insufficient_memory',
      memory_estimate_mb: 5000,
    });
    expect(handed.jobs.outbox).toHaveLength(1);

    const alone = harness(refusal);
    await alone.deliver();
    expect(alone.jobs.row.status).toBe('failed');
    expect(alone.jobs.row.error).toMatchObject({
      code: 'insufficient_memory',
      message: expect.stringMatching(/No live worker has a memory limit of 5000 MiB or more/),
    });
  });

  it('failed, retryable (a crash): re-queued with backoff, and failed once the attempts are spent', async () => {
    const crash: ScriptStep[] = [ready, { exit: 3 }];
    const first = harness(crash);
    await first.deliver();
    expect(first.jobs.row).toMatchObject({ status: 'queued', failures: 1, leaseToken: null });
    expect(first.jobs.outbox).toEqual([
      { payload: { schemaVersion: 1, jobId: JOB_ID, tenantId: TENANT_ID }, delayMs: 1000 },
    ]);

    const last = harness(crash);
    last.jobs.row.failures = 2;
    await last.deliver();
    expect(last.jobs.row).toMatchObject({ status: 'failed', failures: 3 });
    expect(last.jobs.row.error).toMatchObject({
      code: 'training_error',
      message: expect.stringMatching(/code 3.*attempt 3 of 3; giving up/),
    });
    expect(last.jobs.outbox).toEqual([]);
  });

  it('failed, retryable: a child that exits cleanly without a result is retried, not left running', async () => {
    const { jobs, deliver } = harness([ready, { exit: 0 }]);
    await deliver();
    expect(jobs.row).toMatchObject({ status: 'queued', failures: 1 });
    expect(jobs.events.at(-1)?.message).toMatch(/exited without a result/);
  });

  it('stopped for a pause: the final checkpoint is stored and the job is paused', async () => {
    const { jobs, received, deliver } = harness([ready, { hang: true }]);
    const delivered = deliver();
    await waitFor(() => jobs.row.status === 'running');
    jobs.row.pauseRequestedAt = new Date();
    await delivered;
    expect(received).toEqual(['start', 'stop']);
    expect(jobs.row).toMatchObject({
      status: 'paused',
      leaseToken: null,
      pauseRequestedAt: null,
      failures: 0,
    });
    expect(statusTrail(jobs)).toEqual(['paused']);
    expect(jobs.checkpoints.map((c) => c.step)).toEqual([stopCheckpoint().step]);
  });

  it('stopped for shutdown: checkpointed and handed back, no failure counted', async () => {
    const { jobs, processor, deliver } = harness([ready, { hang: true }]);
    const delivered = deliver();
    await waitFor(() => processor.activeJobIds.length === 1);
    await processor.shutdown();
    await delivered;
    expect(jobs.row).toMatchObject({ status: 'queued', failures: 0, leaseToken: null });
    expect(jobs.checkpoints.map((c) => c.step)).toEqual([stopCheckpoint().step]);
    expect(jobs.events.at(-1)?.message).toBe(
      'Worker shutting down: checkpointed and handed the job back',
    );
    expect(jobs.outbox).toHaveLength(1);
  });

  it('killed at the end of the shutdown grace: handed back without a fresh checkpoint', async () => {
    const { jobs, processor, deliver } = harness([ready, { hang: true }], { ignoresStop: true });
    const delivered = deliver();
    await waitFor(() => processor.activeJobIds.length === 1);
    await processor.shutdown();
    await delivered;
    expect(jobs.row).toMatchObject({ status: 'queued', failures: 0 });
    expect(jobs.checkpoints).toEqual([]);
    expect(jobs.events.at(-1)?.message).toBe(
      'Worker shutting down: handed the job back without a fresh checkpoint',
    );
  });

  it('failed while shutting down (a crash after the stop request): handed back, not retried', async () => {
    const { jobs, processor, deliver } = harness([ready, { pauseMs: 100 }, { exit: 3 }], {
      ignoresStop: true,
    });
    const delivered = deliver();
    await waitFor(() => processor.activeJobIds.length === 1);
    await processor.shutdown();
    await delivered;
    expect(jobs.row).toMatchObject({ status: 'queued', failures: 0 });
    expect(jobs.events.at(-1)?.message).toBe('Worker shutting down: handed the job back');
  });

  it('killed by the watchdog: the hang counts as a failure and the job is retried', async () => {
    const { jobs, deliver } = harness([ready, { hang: true }]);
    await deliver();
    expect(jobs.row).toMatchObject({ status: 'queued', failures: 1 });
    expect(jobs.events.at(-1)?.data).toMatchObject({
      reason: 'retry',
      error: 'the trainer reported nothing for 1000 ms and was killed',
    });
  });

  it('killed on cancel: nothing more is written, no retry', async () => {
    const { jobs, deliver } = harness([ready, { hang: true }]);
    const delivered = deliver();
    await waitFor(() => jobs.row.status === 'running');
    // What the API's cancel does: the row flips and the lease is cleared.
    Object.assign(jobs.row, { status: 'cancelled', leaseToken: null });
    const eventsBefore = jobs.events.length;
    await delivered;
    expect(jobs.row).toMatchObject({ status: 'cancelled', failures: 0, error: null });
    expect(jobs.events).toHaveLength(eventsBefore);
    expect(jobs.outbox).toEqual([]);
  });

  it('killed on a refused checkpoint (lease lost to another attempt): nothing written', async () => {
    const { jobs, deliver } = harness(
      [
        ready,
        { pauseMs: 100 },
        {
          kind: 'checkpoint',
          checkpoint: { step: 1, epoch: 0.5, metrics: {}, blob: Uint8Array.of(1) },
        },
        { hang: true },
      ],
      // No control poll before the checkpoint: the refused write itself must stop the trainer.
      { env: workerEnv({ LORAFLEET_CONTROL_POLL_MS: '60000' }) },
    );
    const delivered = deliver();
    await waitFor(() => jobs.row.status === 'running');
    jobs.row.leaseToken = 'lease-of-another-worker';
    await delivered;
    expect(jobs.row).toMatchObject({
      status: 'running',
      leaseToken: 'lease-of-another-worker',
      failures: 0,
    });
    expect(statusTrail(jobs)).toEqual([]);
    expect(jobs.checkpoints).toEqual([]);
    expect(jobs.outbox).toEqual([]);
  });
});

describe('FineTuneProcessor: refusals before any training', () => {
  it('a changed base model fails the job once and ends the delivery unrecoverable', async () => {
    const { jobs, received, deliver } = harness([
      ready,
      { kind: 'result', result: trainerResult() },
    ]);
    jobs.row.baseModelHash = 'f'.repeat(64);
    await expect(deliver()).rejects.toBeInstanceOf(UnrecoverableError);
    expect(received).toEqual([]);
    expect(jobs.row.status).toBe('failed');
    expect(jobs.row.error).toMatchObject({
      code: 'base_model_mismatch',
      message: expect.stringMatching(/changed since the job was created: expected sha256 f{64}/),
    });
  });

  it('a training file that no longer exists fails the job once as invalid_input', async () => {
    const { jobs, received, deliver } = harness([ready]);
    jobs.row.trainingFileId = 'file-deleted';
    await expect(deliver()).rejects.toBeInstanceOf(UnrecoverableError);
    expect(received).toEqual([]);
    expect(jobs.row.error).toMatchObject({
      code: 'invalid_input',
      message: 'training file file-deleted no longer exists',
    });
  });
});

async function waitFor(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
