import { Inject, Injectable, Logger } from '@nestjs/common';
import {
  FineTuneJobPayloadSchema,
  LineageSchema,
  WORKER_GONE_AFTER_MS,
  fineTuneDelivery,
  fineTunedModelName,
  type WorkerEnv,
} from '@lorafleet/contracts';
import {
  BaseModelHashError,
  ModelNotFoundError,
  hashBaseModel,
  resolveBaseModel,
} from '@lorafleet/data';
import {
  FilesRepository,
  WorkersRepository,
  shutdownReserveMs,
  type FineTuningJobEntity,
} from '@lorafleet/db';
import { DelayedError, UnrecoverableError, type Job } from 'bullmq';
import {
  ATTEMPT_JOBS,
  TRAINER_SPAWN,
  WORKER_ENV,
  WORKER_IDENTITY,
  type WorkerIdentity,
} from '../tokens';
import {
  TrainerProcess,
  describeOutcome,
  type SpawnTrainerChild,
  type TrainerOutcome,
} from '../trainer/trainer-process';
import type {
  StopReason,
  TrainerFailure,
  TrainerResult,
  TrainerSpec,
} from '../trainer/trainer-protocol';
import type { AttemptFiles, AttemptJobs, AttemptWorkers } from './attempt-ports';
import { attemptReports } from './attempt-reports';
import { retryWhileDatabaseDown } from './db-retry';

/**
 * The worker's own checks refused the job before any training (R13): it fails once, and the
 * BullMQ delivery ends unrecoverable too. `code` goes on the failed job's error.
 */
interface JobRefusal {
  code: 'invalid_input' | 'base_model_missing' | 'base_model_mismatch';
  message: string;
}

interface ActiveAttempt {
  jobId: string;
  trainer: TrainerProcess;
  stopping: StopReason | null;
}

/**
 * Handles one BullMQ delivery of a fine-tune job: claims an attempt in Postgres (fresh lease
 * token), trains in a child process, and stores checkpoints and the adapter with fenced
 * writes (R7). Failures are retried by re-queueing through the outbox, with backoff, up to
 * LORAFLEET_MAX_ATTEMPTS (R13); cancel, pause and shutdown stop the trainer (R11, R12).
 */
@Injectable()
export class FineTuneProcessor {
  private readonly logger = new Logger('FineTuneProcessor');
  private readonly active = new Map<string, ActiveAttempt>();
  /** Jobs whose delivery this process holds now, from claim to the end of the attempt. */
  private readonly delivering = new Set<string>();
  /** Registry writes are serialised so the last one always carries the newest state. */
  private statusWrite: Promise<void> | null = null;
  private statusDirty = false;
  private stoppingStatus = false;
  private goneStatus = false;
  /** The trainer's memory limit (MiB), from the boot probe; null until it ran. */
  memoryLimitMb: number | null = null;

  constructor(
    @Inject(ATTEMPT_JOBS) private readonly jobs: AttemptJobs,
    @Inject(FilesRepository) private readonly files: AttemptFiles,
    @Inject(WorkersRepository) private readonly workers: AttemptWorkers,
    @Inject(WORKER_ENV) private readonly env: WorkerEnv,
    @Inject(WORKER_IDENTITY) private readonly identity: WorkerIdentity,
    @Inject(TRAINER_SPAWN) private readonly spawnTrainer: SpawnTrainerChild,
  ) {}

  get activeJobIds(): string[] {
    return [...this.active.keys()];
  }

  /**
   * Writes this worker's registry row: `busy` with the current job while any delivery is held
   * (from claim to the end of the attempt), else `idle`; `stopping` while BullMQ does not run.
   * Called on every change and by the heartbeat timer; writes never overlap, and one that
   * was asked for during a write follows it, so a stale `idle` can never land last.
   */
  reportStatus(stopping?: boolean): void {
    // Only the heartbeat knows whether BullMQ still runs; a change of job leaves it as it was.
    if (stopping !== undefined) this.stoppingStatus = stopping;
    this.statusDirty = true;
    if (this.statusWrite) return;
    this.statusWrite = (async () => {
      while (this.statusDirty) {
        this.statusDirty = false;
        const [current = null] = this.goneStatus ? [] : this.delivering;
        const status = this.goneStatus
          ? 'gone'
          : this.stoppingStatus
            ? 'stopping'
            : current !== null
              ? 'busy'
              : 'idle';
        await this.workers.heartbeat(this.identity.id, status, current).catch(() => undefined);
      }
      this.statusWrite = null;
    })();
  }

  /**
   * The last registry write of this process: `gone`, after any write still in flight (a
   * hand-back's `idle` must not land after it).
   */
  async reportGone(): Promise<void> {
    this.goneStatus = true;
    this.reportStatus();
    await this.statusWrite;
  }

  async process(delivery: Pick<Job, 'data' | 'moveToDelayed'>, token?: string): Promise<void> {
    const parsed = FineTuneJobPayloadSchema.safeParse(delivery.data);
    if (!parsed.success) {
      throw new UnrecoverableError(`malformed fine-tune payload: ${parsed.error.message}`);
    }
    const { jobId } = parsed.data;
    await this.passOnIfTooBig(delivery, jobId, token);
    // A running job is delivered again only after its holder stopped renewing the BullMQ
    // lock, so take it over (the old lease is revoked by the new token).
    const claimed = await this.jobs.claimAttempt(
      jobId,
      this.identity.id,
      this.env.LORAFLEET_BACKEND,
      {
        takeover: true,
      },
    );
    if (!claimed) {
      this.logger.log(`job ${jobId} is not queued or running; delivery ignored`);
      return;
    }
    const { job, leaseToken, attempt } = claimed;
    if (claimed.takeover && job.failures >= this.env.LORAFLEET_MAX_ATTEMPTS) {
      await this.fail(
        job.id,
        leaseToken,
        'worker_crashed',
        `the worker training this job stopped responding ${job.failures} times`,
      );
      return;
    }
    this.delivering.add(jobId);
    this.reportStatus();
    try {
      await this.runAttempt(job, leaseToken, attempt);
    } finally {
      this.delivering.delete(jobId);
      this.reportStatus();
    }
  }

  /**
   * A job that a worker with less memory handed back records what it needs. While a live
   * worker with that much exists, a worker below it does not claim the job: the delivery goes
   * back to BullMQ after a pause (no hot loop, and the job is offered to every worker again).
   * With no such worker left, this worker claims it, and its trainer's pre-flight fails it
   * with the estimate and the advice.
   */
  private async passOnIfTooBig(
    delivery: Pick<Job, 'moveToDelayed'>,
    jobId: string,
    token?: string,
  ): Promise<void> {
    const limit = this.memoryLimitMb;
    if (limit === null || token === undefined) return;
    const required = await this.jobs.memoryRequiredMb(jobId);
    if (required === null || required <= limit) return;
    const able = await this.workers.liveWithMemoryAtLeast(
      required,
      WORKER_GONE_AFTER_MS,
      this.identity.id,
    );
    if (able.length === 0) return;
    const delayMs = Math.max(1000, this.env.LORAFLEET_HEARTBEAT_MS);
    this.logger.log(
      `job ${jobId} needs ~${required} MiB, over this worker's ${limit} MiB; left for ${able.map((w) => w.id).join(', ')}`,
    );
    await delivery.moveToDelayed(Date.now() + delayMs, token);
    throw new DelayedError();
  }

  /**
   * SIGTERM (R12): every running trainer checkpoints and stops; the jobs go back to the queue
   * without counting as failures. Resolves when all attempts have ended or the grace is up.
   */
  async shutdown(): Promise<void> {
    const attempts = [...this.active.values()];
    for (const attempt of attempts) {
      attempt.stopping = 'shutdown';
      attempt.trainer.requestStop('shutdown');
    }
    // The trainers get the grace less a reserve in which the killed ones are still handed
    // back: the process itself is gone once the whole grace is spent (main.ts).
    const graceMs = this.env.LORAFLEET_SHUTDOWN_GRACE_MS;
    const grace = new Promise<void>((resolve) =>
      setTimeout(resolve, graceMs - shutdownReserveMs(graceMs)).unref(),
    );
    await Promise.race([Promise.all(attempts.map((a) => a.trainer.outcome)), grace]);
    for (const attempt of attempts) attempt.trainer.kill('shutdown');
  }

  private async runAttempt(
    job: FineTuningJobEntity,
    leaseToken: string,
    attempt: number,
  ): Promise<void> {
    const spec = await this.buildSpec(job);
    if ('refused' in spec) {
      // Fails once: the row says why, and BullMQ must not retry the delivery either.
      await this.fail(job.id, leaseToken, spec.refused.code, spec.refused.message);
      throw new UnrecoverableError(spec.refused.message);
    }
    const trainer: TrainerProcess = new TrainerProcess(
      spec,
      attemptReports({
        jobs: this.jobs,
        logger: this.logger,
        job,
        leaseToken,
        attempt,
        baseModelHash: spec.baseModelHash,
        checkpointKeep: this.env.LORAFLEET_CHECKPOINT_KEEP,
        killTrainer: (reason) => trainer.kill(reason),
      }),
      this.spawnTrainer,
    );
    const current: ActiveAttempt = { jobId: job.id, trainer, stopping: null };
    this.active.set(job.id, current);
    const control = setInterval(
      () => void this.checkControl(current, leaseToken),
      this.env.LORAFLEET_CONTROL_POLL_MS,
    );
    try {
      const outcome = await trainer.outcome;
      await this.settle(job, leaseToken, outcome, current.stopping);
    } finally {
      clearInterval(control);
      this.active.delete(job.id);
      trainer.dispose();
      if (trainer.checkpointsSuperseded > 0) {
        this.logger.warn(
          `job ${job.id}: ${trainer.checkpointsSuperseded} checkpoint(s) were replaced by newer ones before they could be stored (slow database)`,
        );
      }
    }
  }

  /** Polls the job row: cancel (R11), pause, lost lease (R7); and runs the watchdog (R10). */
  private async checkControl(attempt: ActiveAttempt, leaseToken: string): Promise<void> {
    if (attempt.trainer.silentForMs > this.env.LORAFLEET_WATCHDOG_MS) {
      attempt.trainer.kill('watchdog');
      return;
    }
    let row: FineTuningJobEntity | null;
    try {
      row = await this.jobs.findById(attempt.jobId);
    } catch {
      return; // Postgres blip: training goes on; the next poll retries (R24).
    }
    if (!row || row.status === 'cancelled') {
      attempt.trainer.kill('cancelled');
    } else if (row.leaseToken !== leaseToken || row.status !== 'running') {
      attempt.trainer.kill('lease_lost');
    } else if (row.pauseRequestedAt && attempt.stopping === null) {
      attempt.stopping = 'pause';
      attempt.trainer.requestStop('pause');
    }
  }

  private async complete(
    job: FineTuningJobEntity,
    leaseToken: string,
    result: TrainerResult,
  ): Promise<void> {
    const adapter = await retryWhileDatabaseDown(() =>
      this.jobs.completeWithAdapter(job.id, leaseToken, {
        adapterConfig: result.adapterConfig,
        weights: Buffer.from(result.adapterSafetensors),
        lineage: LineageSchema.parse({ ...result.lineage, worker: this.identity.id }),
        fineTunedModel: fineTunedModelName(job.model, job.tenantId, job.suffix, job.id),
        trainedTokens: result.trainedTokens,
        finalMetrics: result.metrics,
        resultCsv: result.resultCsv,
        samples: result.samples,
        // The run's own step count: the job's final progress reads step = total, whatever
        // progress write was last to land.
        totalSteps: result.steps,
        usage: { peakMemoryMb: result.peakMemoryMb, tokensPerSecond: result.tokensPerSecond },
      }),
    );
    if (adapter) {
      this.logger.log(
        `job ${job.id} succeeded: adapter ${adapter.id} (${result.steps} steps on ${result.backend})`,
      );
      await this.recordThroughput(job, result);
    } else {
      this.logger.warn(`job ${job.id}: attempt is stale; its adapter was discarded`);
    }
  }

  /**
   * The speed this attempt trained at, per (base model, method, backend), for the API's job
   * estimate (issue 20). A measurement is advice, not a result: failing to store it only logs.
   */
  private async recordThroughput(job: FineTuningJobEntity, result: TrainerResult): Promise<void> {
    if (result.tokensPerSecond === null || !(result.tokensPerSecond > 0)) return;
    try {
      await this.workers.recordThroughput({
        baseModel: job.model,
        method: job.spec.method.type,
        backend: result.backend,
        workerId: this.identity.id,
        jobId: job.id,
        attempt: job.attempt,
        tokensPerSecond: result.tokensPerSecond,
        trainedTokens: result.trainedTokens,
      });
    } catch (error) {
      this.logger.warn(
        `job ${job.id}: its training speed was not recorded: ${error instanceof Error ? error.message : String(error)}`,
      );
    }
  }

  /**
   * The attempt's fate, decided by how its trainer run ended and nothing else: succeeded →
   * the adapter is stored; stopped → paused or handed back (R12); killed → nothing more to
   * write (cancel, lost lease) or a hang counted as a failure (R10); failed → once or with
   * retries (R13). A run that ends any other way while the worker shuts down is handed back.
   */
  private async settle(
    job: FineTuningJobEntity,
    leaseToken: string,
    outcome: TrainerOutcome,
    stopping: StopReason | null,
  ): Promise<void> {
    switch (outcome.kind) {
      case 'succeeded': {
        // A result that cannot be stored (past the outage retries) fails the attempt.
        const notStored = await this.complete(job, leaseToken, outcome.result).then(
          () => null,
          (error: unknown) => (error instanceof Error ? error.message : String(error)),
        );
        if (notStored !== null) {
          const failure = { kind: 'retryable', message: notStored, param: null } as const;
          await this.settle(job, leaseToken, { kind: 'failed', failure }, stopping);
        }
        return;
      }
      case 'stopped':
        if (outcome.reason === 'pause') {
          await this.jobs.transition(job.id, {
            from: ['running'],
            to: 'paused',
            leaseToken,
            message: 'Fine-tuning job paused; it resumes from its last checkpoint',
            set: { leaseToken: null, pauseRequestedAt: null },
          });
        } else {
          await this.handBack(
            job,
            leaseToken,
            'Worker shutting down: checkpointed and handed the job back',
          );
        }
        return;
      case 'killed':
        if (outcome.reason === 'watchdog') {
          await this.retryOrFail(
            job,
            leaseToken,
            'trainer_hung',
            `the trainer reported nothing for ${this.env.LORAFLEET_WATCHDOG_MS} ms and was killed`,
          );
        } else if (outcome.reason === 'shutdown') {
          await this.handBack(
            job,
            leaseToken,
            'Worker shutting down: handed the job back without a fresh checkpoint',
          );
        } else {
          // Cancelled or lease lost: the row already says so, and this attempt may not write.
          this.logger.log(`job ${job.id}: trainer ${describeOutcome(outcome)}`);
        }
        return;
      case 'failed':
        if (stopping === 'shutdown') {
          await this.handBack(job, leaseToken, 'Worker shutting down: handed the job back');
        } else if (outcome.failure.kind === 'retryable') {
          await this.retryOrFail(job, leaseToken, 'training_error', outcome.failure.message);
        } else {
          await this.failAtOnce(job, leaseToken, outcome.failure);
        }
        return;
    }
  }

  /**
   * Failures no retry can fix (R13, issue 14 item 11): the job fails on this attempt. A run
   * too big for this worker's memory is first offered to a live worker with enough.
   */
  private async failAtOnce(
    job: FineTuningJobEntity,
    leaseToken: string,
    failure: TrainerFailure,
  ): Promise<void> {
    switch (failure.kind) {
      case 'memory_limit': {
        const estimate = failure.estimateMb ?? 0;
        const able = await this.workers
          .liveWithMemoryAtLeast(estimate, WORKER_GONE_AFTER_MS, this.identity.id)
          .catch(() => []);
        if (able.length > 0) {
          await this.handBack(
            job,
            leaseToken,
            `Handed back: this run needs about ${estimate} MiB, over this worker's memory limit of ${failure.limitMb ?? '?'} MiB; ${able.map((w) => `${w.id} (${w.memoryLimitMb} MiB)`).join(', ')} can take it`,
            {
              reason: 'insufficient_memory',
              memory_estimate_mb: estimate,
              memory_limit_mb: failure.limitMb ?? null,
              worker: this.identity.id,
            },
            estimate,
          );
          return;
        }
        await this.fail(
          job.id,
          leaseToken,
          'insufficient_memory',
          `${failure.message} No live worker has a memory limit of ${estimate} MiB or more.`,
        );
        return;
      }
      case 'out_of_memory':
        await this.fail(job.id, leaseToken, 'insufficient_memory', failure.message);
        return;
      case 'invalid_file':
      case 'invalid_model':
      case 'invalid_input':
        await this.fail(
          job.id,
          leaseToken,
          failure.kind,
          failure.message,
          undefined,
          failure.param,
        );
        return;
      case 'retryable':
        // Not reached: `settle` sends retryable failures down the retry path.
        await this.retryOrFail(job, leaseToken, 'training_error', failure.message);
    }
  }

  /** Hand-back (R12): queued again, no failure counted; resumes from the newest checkpoint. */
  private async handBack(
    job: FineTuningJobEntity,
    leaseToken: string,
    message: string,
    eventData: Record<string, string | number | null> = { reason: 'handback' },
    memoryRequiredMb?: number,
  ): Promise<void> {
    await this.jobs.requeue(
      job.id,
      {
        from: ['running'],
        message,
        leaseToken,
        eventData,
        ...(memoryRequiredMb === undefined ? {} : { memoryRequiredMb }),
      },
      fineTuneDelivery(job),
    );
  }

  /** Bounded retries with exponential backoff (R13). */
  private async retryOrFail(
    job: FineTuningJobEntity,
    leaseToken: string,
    code: string,
    message: string,
  ): Promise<void> {
    const failures = job.failures + 1;
    if (failures >= this.env.LORAFLEET_MAX_ATTEMPTS) {
      await this.fail(
        job.id,
        leaseToken,
        code,
        `${message} (attempt ${failures} of ${this.env.LORAFLEET_MAX_ATTEMPTS}; giving up)`,
        failures,
      );
      return;
    }
    const delayMs = this.env.LORAFLEET_RETRY_BACKOFF_MS * 2 ** (failures - 1);
    this.logger.warn(`job ${job.id} attempt failed (${message}); retrying in ${delayMs} ms`);
    await this.jobs.requeue(
      job.id,
      {
        from: ['running'],
        message: `Attempt failed: ${message}. Retrying in ${Math.round(delayMs / 1000)} s (failure ${failures} of ${this.env.LORAFLEET_MAX_ATTEMPTS})`,
        leaseToken,
        countFailure: true,
        delayMs,
        eventData: { reason: 'retry', error: message, failures },
      },
      fineTuneDelivery(job),
    );
  }

  /**
   * The base model's directory on this worker, once its content hash matches the one recorded
   * when the job was created: a missing, incomplete or changed base fails the job at once,
   * naming the model and both hashes, instead of training an adapter for another base.
   */
  private async verifiedBaseModel(
    job: FineTuningJobEntity,
  ): Promise<{ dir: string; sha256: string } | { refused: JobRefusal }> {
    const where = `on worker ${this.identity.id} (${this.env.LORAFLEET_MODELS_DIR})`;
    let dir: string;
    let sha256: string;
    try {
      dir = resolveBaseModel(this.env.LORAFLEET_MODELS_DIR, job.model).dir;
      sha256 = (await hashBaseModel(dir)).sha256;
    } catch (error) {
      if (error instanceof ModelNotFoundError || error instanceof BaseModelHashError) {
        return {
          refused: {
            code: 'base_model_missing',
            message: `base model ${JSON.stringify(job.model)} is missing ${where}: ${error.message}`,
          },
        };
      }
      throw error;
    }
    if (job.baseModelHash !== null && sha256 !== job.baseModelHash) {
      return {
        refused: {
          code: 'base_model_mismatch',
          message: `base model ${JSON.stringify(job.model)} changed since the job was created: expected sha256 ${job.baseModelHash}, found ${sha256} ${where}`,
        },
      };
    }
    return { dir, sha256 };
  }

  private async buildSpec(
    job: FineTuningJobEntity,
  ): Promise<TrainerSpec | { refused: JobRefusal }> {
    const base = await this.verifiedBaseModel(job);
    if ('refused' in base) return base;
    const missing = (message: string) => ({
      refused: { code: 'invalid_input', message } satisfies JobRefusal,
    });
    const training = await this.files.getContent(job.tenantId, job.trainingFileId);
    if (!training) return missing(`training file ${job.trainingFileId} no longer exists`);
    const validation = job.validationFileId
      ? await this.files.getContent(job.tenantId, job.validationFileId)
      : null;
    if (job.validationFileId && !validation) {
      return missing(`validation file ${job.validationFileId} no longer exists`);
    }
    const checkpoint = await this.jobs.latestCheckpoint(job.id);
    return {
      jobId: job.id,
      modelName: job.model,
      modelDir: base.dir,
      baseModelHash: base.sha256,
      trainingJsonl: training.toString('utf8'),
      validationJsonl: validation ? validation.toString('utf8') : null,
      spec: job.spec,
      backend: this.env.LORAFLEET_BACKEND,
      checkpointEverySteps: this.env.LORAFLEET_CHECKPOINT_EVERY_STEPS,
      checkpointEverySeconds: this.env.LORAFLEET_CHECKPOINT_EVERY_SECONDS,
      resumeFrom: checkpoint ? new Uint8Array(checkpoint.blob) : null,
      memoryLimitMb: this.memoryLimitMb,
    };
  }

  private async fail(
    jobId: string,
    leaseToken: string,
    code: string,
    message: string,
    failures?: number,
    param: string | null = null,
  ): Promise<void> {
    const failed = await retryWhileDatabaseDown(() =>
      this.jobs.transition(jobId, {
        from: ['running'],
        to: 'failed',
        leaseToken,
        message: `Fine-tuning job failed: ${message}`,
        set: {
          error: { code, message, param },
          leaseToken: null,
          ...(failures === undefined ? {} : { failures }),
        },
      }),
    );
    if (failed) this.logger.warn(`job ${jobId} failed: ${message}`);
    else this.logger.log(`job ${jobId} not failed (${message}): the attempt no longer holds it`);
  }
}
