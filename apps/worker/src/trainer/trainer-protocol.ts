import type { FineTuneSpec, Lineage } from '@lorafleet/contracts';
import type { JsonObject } from '@lorafleet/db';

/**
 * Messages between the worker parent and its trainer child (over the fork IPC channel with
 * `advanced` serialization, so byte arrays travel as they are). The child owns tfjs; the
 * parent owns Postgres, Redis and the BullMQ lock, so its event loop never blocks on a
 * training step (R8).
 */
export interface TrainerSpec {
  jobId: string;
  modelName: string;
  modelDir: string;
  /** Content hash of the base model, verified against the job's before training (lineage). */
  baseModelHash: string;
  trainingJsonl: string;
  validationJsonl: string | null;
  /** The job's spec as the API stored it, handed to `runFineTune` unchanged. */
  spec: FineTuneSpec;
  /** LORAFLEET_BACKEND as configured on the worker. */
  backend: string;
  checkpointEverySteps: number;
  checkpointEverySeconds: number;
  /** The newest stored checkpoint of this job, to resume from (R5). */
  resumeFrom: Uint8Array | null;
  /** The worker's memory budget (MiB): the pre-flight refuses a run estimated above it. */
  memoryLimitMb: number | null;
}

export type StopReason = 'pause' | 'shutdown';

export type ParentToChild =
  | { kind: 'start'; spec: TrainerSpec }
  /** Initialise the backend, report it with `ready`, and exit (boot check). */
  | { kind: 'probe'; backend: string }
  /** Checkpoint at the next step boundary, report it, then stop with `stopped`. */
  | { kind: 'stop'; reason: StopReason };

/**
 * A DPO run's reward metrics (lora-core `DpoRewardMetrics`): TRL's `rewards/chosen`,
 * `rewards/rejected`, `rewards/margins` and `rewards/accuracies`.
 */
export interface TrainerRewardMetrics {
  rewardsChosen: number;
  rewardsRejected: number;
  rewardsMargin: number;
  rewardsAccuracy: number;
}

/**
 * The reward metrics under their event, checkpoint and CSV names: `<prefix>_rewards_chosen`,
 * `_rejected`, `_margin`, `_accuracy` (prefix `train`, `valid` or `full_valid`); nothing for a
 * supervised run.
 */
export function rewardMetricFields(
  prefix: 'train' | 'valid' | 'full_valid',
  rewards: TrainerRewardMetrics | undefined,
): Record<string, number> {
  if (!rewards) return {};
  return {
    [`${prefix}_rewards_chosen`]: rewards.rewardsChosen,
    [`${prefix}_rewards_rejected`]: rewards.rewardsRejected,
    [`${prefix}_rewards_margin`]: rewards.rewardsMargin,
    [`${prefix}_rewards_accuracy`]: rewards.rewardsAccuracy,
  };
}

export interface TrainerProgress {
  step: number;
  totalSteps: number;
  epoch: number;
  /** Mean token NLL (supervised) or mean DPO loss over the step's pairs. */
  loss: number;
  /** Supervised only. */
  meanTokenAccuracy?: number;
  /** DPO only. */
  dpo?: TrainerRewardMetrics;
  learningRate: number;
  tokensPerSecond: number;
  etaSeconds: number;
}

/** The pre-flight numbers the child reports before step 1 (DESIGN §6). */
export interface TrainerPreflight {
  examples: number;
  tokens: number;
  trainableTokens: number;
  truncatedExamples: number;
  examplesWithTruncatedTargets: number;
  longestKeptTokens: number;
  longestExampleTokens: number;
  totalSteps: number;
  memoryEstimateMb: number;
  memoryLimitMb: number | null;
  gradientCheckpointing: boolean;
}

/**
 * Why a run failed, as the child classified it (issue 14 item 11): input, model or config
 * errors and memory refusals fail the job at once; anything else may be infrastructure and
 * is retried.
 */
export type TrainerFailureKind =
  /** The data or the options cannot train (R13). */
  | 'invalid_input'
  /** The base model's files or config cannot be used. */
  | 'invalid_model'
  /** Every example lost its completion to truncation: the training file trains nothing. */
  | 'invalid_file'
  /** The pre-flight estimate exceeds this worker's memory limit (before any weight loaded). */
  | 'memory_limit'
  /** Memory ran out while running (a wasm abort); reported with the same advice. */
  | 'out_of_memory'
  /** Anything else: possibly transient, retried with backoff. */
  | 'retryable';

export interface TrainerFailure {
  kind: TrainerFailureKind;
  message: string;
  /** The request field to blame, as the job error's `param`. */
  param: string | null;
  /** With `memory_limit`: the estimate and the limit it exceeded (MiB). */
  estimateMb?: number;
  limitMb?: number;
}

export interface TrainerCheckpoint {
  step: number;
  epoch: number;
  metrics: Record<string, number>;
  blob: Uint8Array;
}

export interface TrainerResult {
  adapterConfig: JsonObject;
  adapterSafetensors: Uint8Array;
  trainedTokens: number;
  finalLoss: number;
  steps: number;
  backend: string;
  /** Final metrics (validation loss/accuracy when a validation file was given). */
  metrics: Record<string, number>;
  /** Step metrics as CSV (OpenAI's `result_files`). */
  resultCsv: string;
  /** A few validation prompts with the adapter's completions. */
  samples: { prompt: string; completion: string; reference: string }[];
  lineage: Lineage;
  /** Peak resident memory of the trainer process (VmHWM), MiB; null off Linux. */
  peakMemoryMb: number | null;
  /** Real tokens per second, averaged over this attempt's steps; null if none ran. */
  tokensPerSecond: number | null;
}

export type ChildToParent =
  /** `memoryLimitMb`: what this process resolved LORAFLEET_MEMORY_LIMIT_MB to (probe). */
  | { kind: 'ready'; backend: string; resumedFromStep: number | null; memoryLimitMb?: number }
  | { kind: 'preflight'; summary: TrainerPreflight }
  /** Something the user should know before training starts (a `warn` event). */
  | { kind: 'warning'; message: string; data: Record<string, number> }
  | { kind: 'progress'; progress: TrainerProgress }
  | { kind: 'eval'; step: number; metrics: Record<string, number> }
  | { kind: 'checkpoint'; checkpoint: TrainerCheckpoint }
  | { kind: 'stopped'; reason: StopReason }
  | { kind: 'result'; result: TrainerResult }
  | { kind: 'error'; failure: TrainerFailure };
