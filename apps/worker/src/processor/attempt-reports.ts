import type { Logger } from '@nestjs/common';
import type { FineTuningJobEntity } from '@lorafleet/db';
import type { KillReason, TrainerHandlers } from '../trainer/trainer-process';
import { rewardMetricFields, type TrainerPreflight } from '../trainer/trainer-protocol';
import { retryWhileDatabaseDown } from './db-retry';
import type { AttemptJobs } from './attempt-ports';

export interface AttemptReportsContext {
  jobs: AttemptJobs;
  logger: Logger;
  job: FineTuningJobEntity;
  leaseToken: string;
  attempt: number;
  /** The verified base model hash, recorded in the "Trainer started" event. */
  baseModelHash: string;
  /** LORAFLEET_CHECKPOINT_KEEP. */
  checkpointKeep: number;
  /** Stops the trainer when a checkpoint is refused: another attempt holds the job (R7). */
  killTrainer: (reason: KillReason) => void;
}

/**
 * Records what the trainer reports on the job, every write fenced by the attempt's lease:
 * events and progress are best effort; a checkpoint that cannot be stored (the lease is
 * gone) stops the trainer. How the run ends is the processor's business, not this.
 */
export function attemptReports({
  jobs,
  logger,
  job,
  leaseToken,
  attempt,
  baseModelHash,
  checkpointKeep,
  killTrainer,
}: AttemptReportsContext): TrainerHandlers {
  const fenced = (what: string, write: () => Promise<unknown>) =>
    void write().catch((error: unknown) =>
      logger.warn(`job ${job.id}: ${what} failed: ${String(error)}`),
    );
  return {
    onReady: (backend, resumedFromStep) =>
      fenced('backend record', async () => {
        await jobs.recordBackend(job.id, leaseToken, backend);
        await jobs.appendFencedEvent(job.id, leaseToken, {
          type: 'message',
          message:
            resumedFromStep === null
              ? `Trainer started on backend ${backend}`
              : `Trainer resumed from checkpoint at step ${resumedFromStep} on backend ${backend}`,
          data: {
            backend,
            resumed_from_step: resumedFromStep,
            attempt,
            base_model_hash: baseModelHash,
          },
        });
      }),
    onPreflight: (summary) =>
      fenced('pre-flight event', () =>
        jobs.appendFencedEvent(job.id, leaseToken, {
          type: 'message',
          message: preflightMessage(summary),
          data: { ...summary },
        }),
      ),
    onWarning: (message, data) =>
      fenced('warning event', () =>
        jobs.appendFencedEvent(job.id, leaseToken, {
          type: 'message',
          level: 'warn',
          message,
          data,
        }),
      ),
    onProgress: (progress) =>
      fenced('progress', async () => {
        await jobs.updateProgress(job.id, leaseToken, {
          step: progress.step,
          totalSteps: progress.totalSteps,
          epoch: progress.epoch,
          estimatedFinish: new Date(Date.now() + progress.etaSeconds * 1000),
        });
        await jobs.appendFencedEvent(job.id, leaseToken, {
          type: 'metrics',
          message:
            `Step ${progress.step}/${progress.totalSteps}: training loss=${progress.loss.toFixed(4)}` +
            (progress.dpo
              ? `, reward margin=${progress.dpo.rewardsMargin.toFixed(4)}, reward accuracy=${progress.dpo.rewardsAccuracy.toFixed(2)}`
              : ''),
          data: {
            step: progress.step,
            total_steps: progress.totalSteps,
            epoch: progress.epoch,
            train_loss: progress.loss,
            // A DPO step reports reward metrics instead of token accuracy (trainer-protocol.ts).
            ...(progress.meanTokenAccuracy === undefined
              ? {}
              : { train_mean_token_accuracy: progress.meanTokenAccuracy }),
            ...rewardMetricFields('train', progress.dpo),
            learning_rate: progress.learningRate,
            tokens_per_second: progress.tokensPerSecond,
          },
        });
      }),
    onEval: (step, metrics) =>
      fenced('eval event', () =>
        jobs.appendFencedEvent(job.id, leaseToken, {
          type: 'metrics',
          message: `Step ${step}: validation loss=${metrics.valid_loss?.toFixed(4) ?? '?'}`,
          data: { step, ...metrics },
        }),
      ),
    onCheckpoint: async (checkpoint) => {
      const id = await retryWhileDatabaseDown(() =>
        jobs.saveCheckpoint(
          job.id,
          leaseToken,
          {
            attempt,
            step: checkpoint.step,
            metrics: checkpoint.metrics,
            blob: Buffer.from(checkpoint.blob),
          },
          checkpointKeep,
        ),
      ).catch((error: unknown) => {
        logger.warn(
          `job ${job.id}: checkpoint at step ${checkpoint.step} not stored: ${String(error)}`,
        );
        return null;
      });
      if (id === null) killTrainer('lease_lost');
    },
  };
}

/** The pre-flight event's line: the data's size, the steps, and the memory estimate. */
function preflightMessage(summary: TrainerPreflight): string {
  const memory =
    `memory estimate ${summary.memoryEstimateMb.toLocaleString('en-US')} MiB` +
    (summary.memoryLimitMb === null
      ? ''
      : ` of ${summary.memoryLimitMb.toLocaleString('en-US')} MiB`) +
    (summary.gradientCheckpointing ? ' (gradient checkpointing)' : '');
  return `Pre-flight: ${summary.examples} examples, ${summary.tokens} tokens (${summary.trainableTokens} trained), ${summary.truncatedExamples} truncated, ${summary.totalSteps} steps; ${memory}`;
}
