import type { JsonObject } from '@lorafleet/db';
import type { LoraConfigDto, ResolvedHyperparameters, TrainingOptions } from '@lorafleet/contracts';

/**
 * Messages between the worker parent and its trainer child (over the fork IPC channel).
 * The child owns tfjs; the parent owns Postgres, Redis and the BullMQ lock, so its event
 * loop never blocks on a training step (R8).
 */
export interface TrainerSpec {
  jobId: string;
  modelName: string;
  modelDir: string;
  trainingJsonl: string;
  validationJsonl: string | null;
  seed: number;
  learningRate: number;
  hyperparameters: ResolvedHyperparameters;
  lora: LoraConfigDto;
  training: TrainingOptions;
  /** LORAFLEET_BACKEND as configured on the worker. */
  backend: string;
}

export type ParentToChild = { kind: 'start'; spec: TrainerSpec } | { kind: 'stop' };

export interface TrainerProgress {
  step: number;
  totalSteps: number;
  epoch: number;
  loss: number;
  learningRate: number;
  tokensPerSecond: number;
  etaSeconds: number;
}

export interface TrainerResult {
  adapterConfig: JsonObject;
  /** adapter_model.safetensors bytes (the IPC channel uses `advanced` serialization). */
  adapterSafetensors: Uint8Array;
  trainedTokens: number;
  finalLoss: number;
  steps: number;
  backend: string;
}

export type ChildToParent =
  | { kind: 'ready'; backend: string }
  | { kind: 'preflight'; summary: Record<string, number> }
  | { kind: 'progress'; progress: TrainerProgress }
  | { kind: 'result'; result: TrainerResult }
  /** `retryable: false` marks bad input (R13): failing again would not help. */
  | { kind: 'error'; message: string; retryable: boolean };
