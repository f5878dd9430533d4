/**
 * Public types of the trainer: the spec it trains from, per-step metrics, callbacks and
 * errors. docs/trainer.md documents them for the worker.
 */
import { FineTuneSpecSchema, type FineTuneSpec } from '@lorafleet/contracts';

/** Optional early stopping on validation loss (needs validation data and `evalEverySteps`). */
export interface EarlyStoppingOptions {
  /** Evaluations without an improvement of more than `minDelta` before stopping. */
  patience: number;
  /** Default 0. */
  minDelta?: number;
  /** Export the best evaluated adapter instead of the last one. Default true. */
  restoreBest?: boolean;
}

/**
 * TRL's DPO reward metrics (`rewards/chosen`, `rewards/rejected`, `rewards/margins`,
 * `rewards/accuracies`), means over a step's or a validation pass's pairs. A reward is
 * β·(log π(y|x) − log π_ref(y|x)) of one completion (train/dpo.loss.ts).
 */
export interface DpoRewardMetrics {
  rewardsChosen: number;
  rewardsRejected: number;
  /** rewardsChosen − rewardsRejected. */
  rewardsMargin: number;
  /** Share of pairs whose chosen reward exceeds the rejected one. */
  rewardsAccuracy: number;
}

/** One row of the step-metrics CSV (OpenAI `result_files` plus lorafleet's extras). */
export interface StepMetrics {
  step: number;
  /** Fractional epochs completed after this step. */
  epoch: number;
  /** The mean token NLL (supervised), or the mean DPO loss −log σ(β·z) over the step's pairs. */
  trainLoss: number;
  /** Supervised only: DPO scores whole completions, not tokens. */
  trainMeanTokenAccuracy?: number;
  /** DPO only: the step's reward metrics. */
  dpo?: DpoRewardMetrics;
  /** Set on steps that ran a validation pass. */
  validLoss?: number;
  validMeanTokenAccuracy?: number;
  /** DPO only, on steps that ran a validation pass. */
  validDpo?: DpoRewardMetrics;
  learningRate: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** Target tokens scored in this step. */
  targetTokens: number;
  /** Real (non-padding) tokens read in this step. */
  tokens: number;
  /** This step's throughput in real tokens per second. */
  tokensPerSecond: number;
}

/** What the progress callback receives after every optimizer step. */
export interface TrainingProgress {
  step: number;
  totalSteps: number;
  /** Fractional epochs completed. */
  epoch: number;
  totalEpochs: number;
  loss: number;
  /** Supervised only. */
  meanTokenAccuracy?: number;
  /** DPO only: this step's reward metrics. */
  dpo?: DpoRewardMetrics;
  learningRate: number;
  gradNorm: number;
  /** Real tokens per second, averaged over this attempt's steps. */
  tokensPerSecond: number;
  /** Seconds left at this attempt's average step time. */
  etaSeconds: number;
  /** Seconds this attempt has spent training (excludes time before a resume). */
  elapsedSeconds: number;
}

export interface EvalMetrics {
  /** Mean next-token NLL over validation targets (supervised), or the mean DPO loss over pairs. */
  loss: number;
  /** Supervised only. */
  meanTokenAccuracy?: number;
  /** DPO only: reward metrics over the validation pairs. */
  dpo?: DpoRewardMetrics;
  /** Target tokens scored. */
  tokens: number;
  /** Examples (supervised) or pairs (DPO) evaluated. */
  examples: number;
}

/** A supervised validation pass: token accuracy is always measured. */
export interface TokenEvalMetrics extends EvalMetrics {
  meanTokenAccuracy: number;
}

export interface EvalReport extends EvalMetrics {
  step: number;
  /** True when this is the best validation loss so far. */
  isBest: boolean;
}

/** A checkpoint handed to the sink. `blob` is self-describing (see checkpoint.codec.ts). */
export interface TrainerCheckpointEvent {
  blob: Uint8Array;
  step: number;
  epoch: number;
  /** The metrics of the step just completed (absent for a step-0 checkpoint). */
  metrics?: StepMetrics;
  reason: 'interval' | 'abort';
}

export type StopReason = 'completed' | 'max_steps' | 'early_stopping';

/** Hyperparameters or data the trainer cannot use. `field` names the culprit. */
export class TrainingConfigError extends Error {
  override readonly name: string = 'TrainingConfigError';
  constructor(
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

/**
 * Checks a spec handed to the trainer against the contracts schema (callers other than
 * libs/data `resolveFineTuneSpec` may build one by hand). A bad field is a
 * `TrainingConfigError` whose `field` is the spec's path, e.g. `training.learning_rate`.
 */
export function checkFineTuneSpec(spec: FineTuneSpec): FineTuneSpec {
  const parsed = FineTuneSpecSchema.safeParse(spec);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const field = issue.path.join('.');
  throw new TrainingConfigError(`${field || 'spec'}: ${issue.message}`, field || undefined);
}

/**
 * The loss or the gradients became NaN/Inf (R16). The update of `step` was not applied.
 * `lastCheckpoint` is the last blob handed to the checkpoint sink, if any: it was checked
 * finite before it was emitted, and the trainer never emits one after this error.
 */
export class NonFiniteLossError extends Error {
  override readonly name = 'NonFiniteLossError';
  constructor(
    readonly step: number,
    readonly loss: number,
    readonly gradNorm: number,
    readonly lastCheckpointStep: number | null,
    readonly lastCheckpoint: Uint8Array | null,
  ) {
    super(
      `training diverged at step ${step}: loss ${loss}, gradient norm ${gradNorm}. ` +
        `Lower the learning rate or enable clipping; ` +
        (lastCheckpointStep === null
          ? 'no checkpoint was written before it'
          : `the last good checkpoint is step ${lastCheckpointStep}`),
    );
  }
}

/** Training stopped because the caller's AbortSignal fired (cancel, pause, SIGTERM). */
export class TrainingAbortedError extends Error {
  override readonly name = 'TrainingAbortedError';
  constructor(
    /** Optimizer steps completed. */
    readonly step: number,
    readonly reason: unknown,
    /** The checkpoint written on abort, when the trainer had a sink. */
    readonly checkpoint: Uint8Array | null,
  ) {
    super(
      `training aborted after step ${step}${reason instanceof Error ? `: ${reason.message}` : ''}`,
    );
  }
}
