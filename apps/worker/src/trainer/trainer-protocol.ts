import type { LoraConfigDto, ResolvedHyperparameters, TrainingOptions } from '@lorafleet/contracts';
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
  seed: number;
  learningRate: number;
  hyperparameters: ResolvedHyperparameters;
  lora: LoraConfigDto;
  training: TrainingOptions;
  /** LORAFLEET_BACKEND as configured on the worker. */
  backend: string;
  checkpointEverySteps: number;
  checkpointEverySeconds: number;
  /** The newest stored checkpoint of this job, to resume from (R5). */
  resumeFrom: Uint8Array | null;
}

export type StopReason = 'pause' | 'shutdown';

export type ParentToChild =
  | { kind: 'start'; spec: TrainerSpec }
  /** Initialise the backend, report it with `ready`, and exit (boot check). */
  | { kind: 'probe'; backend: string }
  /** Checkpoint at the next step boundary, report it, then stop with `stopped`. */
  | { kind: 'stop'; reason: StopReason };

export interface TrainerProgress {
  step: number;
  totalSteps: number;
  epoch: number;
  loss: number;
  meanTokenAccuracy: number;
  learningRate: number;
  tokensPerSecond: number;
  etaSeconds: number;
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
  lineage: JsonObject;
}

export type ChildToParent =
  | { kind: 'ready'; backend: string; resumedFromStep: number | null }
  | { kind: 'preflight'; summary: Record<string, number> }
  | { kind: 'progress'; progress: TrainerProgress }
  | { kind: 'eval'; step: number; metrics: Record<string, number> }
  | { kind: 'checkpoint'; checkpoint: TrainerCheckpoint }
  | { kind: 'stopped'; reason: StopReason }
  | { kind: 'result'; result: TrainerResult }
  /** `retryable: false` marks bad input (R13): failing again would not help. */
  | { kind: 'error'; message: string; retryable: boolean };
