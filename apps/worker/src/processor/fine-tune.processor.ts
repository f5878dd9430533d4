import { Inject, Injectable, Logger } from '@nestjs/common';
import { FineTuneJobPayloadSchema, fineTunedModelName, type WorkerEnv } from '@lorafleet/contracts';
import { ModelNotFoundError, resolveBaseModel } from '@lorafleet/data';
import {
  FilesRepository,
  JobsRepository,
  WorkersRepository,
  type FineTuningJobEntity,
} from '@lorafleet/db';
import { UnrecoverableError, type Job } from 'bullmq';
import { WORKER_ENV, WORKER_IDENTITY, type WorkerIdentity } from '../tokens';
import { TrainerFailedError, TrainerProcess } from '../trainer/trainer-process';
import type { TrainerSpec } from '../trainer/trainer-protocol';

/** How often a running attempt re-reads its job row to notice cancel or a lost lease. */
const CONTROL_POLL_MS = 1000;

/**
 * Handles one BullMQ delivery of a fine-tune job: claims an attempt in Postgres (fresh lease
 * token), trains in a child process, and stores the adapter with fenced writes (R7).
 */
@Injectable()
export class FineTuneProcessor {
  private readonly logger = new Logger('FineTuneProcessor');

  constructor(
    private readonly jobs: JobsRepository,
    private readonly files: FilesRepository,
    private readonly workers: WorkersRepository,
    @Inject(WORKER_ENV) private readonly env: WorkerEnv,
    @Inject(WORKER_IDENTITY) private readonly identity: WorkerIdentity,
  ) {}

  async process(delivery: Job): Promise<void> {
    const parsed = FineTuneJobPayloadSchema.safeParse(delivery.data);
    if (!parsed.success) {
      throw new UnrecoverableError(`malformed fine-tune payload: ${parsed.error.message}`);
    }
    const { jobId } = parsed.data;
    const claimed = await this.jobs.claimAttempt(
      jobId,
      this.identity.id,
      this.env.LORAFLEET_BACKEND,
    );
    if (!claimed) {
      // Cancelled, finished, or already running elsewhere: Postgres says there is nothing to do.
      this.logger.log(`job ${jobId} is not queued; delivery ignored`);
      return;
    }
    const { job, leaseToken } = claimed;
    await this.workers.heartbeat(this.identity.id, 'busy', jobId);
    try {
      await this.runAttempt(job, leaseToken);
    } finally {
      await this.workers.heartbeat(this.identity.id, 'idle', null);
    }
  }

  private async runAttempt(job: FineTuningJobEntity, leaseToken: string): Promise<void> {
    let spec: TrainerSpec;
    try {
      spec = await this.buildSpec(job);
    } catch (error) {
      await this.fail(job.id, leaseToken, 'invalid_input', (error as Error).message);
      return;
    }
    const trainer = new TrainerProcess(spec, {
      onReady: (backend) =>
        void this.note(job.id, leaseToken, `Trainer started on backend ${backend}`),
      onPreflight: (summary) =>
        void this.jobs.appendFencedEvent(job.id, leaseToken, {
          type: 'message',
          message: `Pre-flight: ${summary.examples} examples, ${summary.tokens} tokens, ${summary.totalSteps} steps`,
          data: summary,
        }),
      onProgress: (progress) => {
        const eta = new Date(Date.now() + progress.etaSeconds * 1000);
        void this.jobs
          .updateProgress(job.id, leaseToken, {
            step: progress.step,
            totalSteps: progress.totalSteps,
            epoch: progress.epoch,
            estimatedFinish: eta,
          })
          .then(() =>
            this.jobs.appendFencedEvent(job.id, leaseToken, {
              type: 'metrics',
              message: `Step ${progress.step}/${progress.totalSteps}: training loss=${progress.loss.toFixed(4)}`,
              data: {
                step: progress.step,
                total_steps: progress.totalSteps,
                train_loss: progress.loss,
                learning_rate: progress.learningRate,
                tokens_per_second: progress.tokensPerSecond,
              },
            }),
          )
          .catch((error: unknown) => this.logger.warn(`progress write failed: ${String(error)}`));
      },
    });
    const control = setInterval(() => {
      void this.jobs
        .findById(job.id)
        .then((row) => {
          if (!row || row.leaseToken !== leaseToken || row.status !== 'running') {
            trainer.kill(row?.status === 'cancelled' ? 'cancelled' : 'lease lost');
          }
        })
        .catch(() => undefined); // Postgres blips must not kill training; the next poll retries.
    }, CONTROL_POLL_MS);
    try {
      const result = await trainer.result;
      const adapter = await this.jobs.completeWithAdapter(job.id, leaseToken, {
        adapterConfig: result.adapterConfig,
        weights: Buffer.from(result.adapterSafetensors),
        lineage: { backend: result.backend, seed: job.seed, base_model: job.model },
        fineTunedModel: fineTunedModelName(job.model, job.tenantId, job.suffix, job.id),
        trainedTokens: result.trainedTokens,
      });
      if (adapter) {
        this.logger.log(`job ${job.id} succeeded: adapter ${adapter.id} (${result.steps} steps)`);
      } else {
        this.logger.warn(`job ${job.id}: attempt is stale; its adapter was discarded`);
      }
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      if (message === 'cancelled' || message === 'lease lost') {
        this.logger.log(`job ${job.id}: trainer stopped (${message})`);
        return;
      }
      const retryable = error instanceof TrainerFailedError ? error.retryable : true;
      await this.fail(job.id, leaseToken, retryable ? 'training_error' : 'invalid_input', message);
    } finally {
      clearInterval(control);
      trainer.kill('attempt finished');
    }
  }

  private async buildSpec(job: FineTuningJobEntity): Promise<TrainerSpec> {
    let modelDir: string;
    try {
      modelDir = resolveBaseModel(this.env.LORAFLEET_MODELS_DIR, job.model).dir;
    } catch (error) {
      if (error instanceof ModelNotFoundError)
        throw new Error(`${error.message} on worker ${this.identity.id}`);
      throw error;
    }
    const training = await this.files.getContent(job.tenantId, job.trainingFileId);
    if (!training) throw new Error(`training file ${job.trainingFileId} no longer exists`);
    const validation = job.validationFileId
      ? await this.files.getContent(job.tenantId, job.validationFileId)
      : null;
    if (job.validationFileId && !validation) {
      throw new Error(`validation file ${job.validationFileId} no longer exists`);
    }
    return {
      jobId: job.id,
      modelName: job.model,
      modelDir,
      trainingJsonl: training.toString('utf8'),
      validationJsonl: validation ? validation.toString('utf8') : null,
      seed: job.seed,
      learningRate: job.learningRate,
      hyperparameters: job.hyperparameters,
      lora: job.lora,
      training: job.training,
      backend: this.env.LORAFLEET_BACKEND,
    };
  }

  private async note(jobId: string, leaseToken: string, message: string): Promise<void> {
    await this.jobs.appendFencedEvent(jobId, leaseToken, { type: 'message', message });
  }

  private async fail(
    jobId: string,
    leaseToken: string,
    code: string,
    message: string,
  ): Promise<void> {
    this.logger.warn(`job ${jobId} failed: ${message}`);
    await this.jobs.transition(jobId, {
      from: ['running'],
      to: 'failed',
      leaseToken,
      message: `Fine-tuning job failed: ${message}`,
      set: { error: { code, message, param: null } },
    });
  }
}
