/**
 * Public types of the trainer: hyperparameters, per-step metrics, callbacks and errors.
 * docs/trainer.md documents them for the worker.
 */
import type { LrSchedulerType } from './lr-schedule';

/** Resolved training hyperparameters; `resolveHyperparameters` fills the defaults. */
export interface TrainingHyperparameters {
  /** Passes over the training set (OpenAI `n_epochs`). Default 3. */
  epochs: number;
  /** Examples per micro-batch (OpenAI `batch_size`). Default 4. */
  batchSize: number;
  /** Peak learning rate. Default 2e-4 (DESIGN §4). */
  learningRate: number;
  /** Decay after warmup. Default `linear`. */
  lrScheduler: LrSchedulerType;
  /** Linear warmup steps (optimizer steps). Default 0. */
  warmupSteps: number;
  /** AdamW decoupled weight decay λ. Default 0. */
  weightDecay: number;
  /** Micro-batches per optimizer step. Default 1. */
  gradientAccumulationSteps: number;
  /** Global-norm gradient clipping threshold; 0 disables. Default 1.0 (HF Trainer's). */
  maxGradNorm: number;
  /** Caps the optimizer steps of the run (the schedule decays over the capped run); null = none. */
  maxSteps: number | null;
  /** Validation every N optimizer steps; null = only the final full validation. */
  evalEverySteps: number | null;
  /** Seeds LoRA init, per-epoch shuffling, adapter dropout and sampling. Default 42. */
  seed: number;
  adamBeta1: number;
  adamBeta2: number;
  adamEpsilon: number;
}

export const DEFAULT_HYPERPARAMETERS: TrainingHyperparameters = {
  epochs: 3,
  batchSize: 4,
  learningRate: 2e-4,
  lrScheduler: 'linear',
  warmupSteps: 0,
  weightDecay: 0,
  gradientAccumulationSteps: 1,
  maxGradNorm: 1,
  maxSteps: null,
  evalEverySteps: null,
  seed: 42,
  adamBeta1: 0.9,
  adamBeta2: 0.999,
  adamEpsilon: 1e-8,
};

/** Optional early stopping on validation loss (needs validation data and `evalEverySteps`). */
export interface EarlyStoppingOptions {
  /** Evaluations without an improvement of more than `minDelta` before stopping. */
  patience: number;
  /** Default 0. */
  minDelta?: number;
  /** Export the best evaluated adapter instead of the last one. Default true. */
  restoreBest?: boolean;
}

/** One row of the step-metrics CSV (OpenAI `result_files` plus lorafleet's extras). */
export interface StepMetrics {
  step: number;
  /** Fractional epochs completed after this step. */
  epoch: number;
  trainLoss: number;
  trainMeanTokenAccuracy: number;
  /** Set on steps that ran a validation pass. */
  validLoss?: number;
  validMeanTokenAccuracy?: number;
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
  meanTokenAccuracy: number;
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
  /** Mean next-token NLL over validation targets. */
  loss: number;
  meanTokenAccuracy: number;
  /** Target tokens scored. */
  tokens: number;
  examples: number;
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
