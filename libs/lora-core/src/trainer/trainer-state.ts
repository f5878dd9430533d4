/**
 * The trainer's state as a checkpoint blob, and back (issue 4 item 3, R6).
 *
 * `Trainer` owns the loop; this module owns what a checkpoint holds of it: the loop's
 * counters and data position (`LoopState`), the trainable values, the AdamW moments, the best
 * evaluated values, and the run's identity (config and data hashes) that a resume must match.
 * checkpoint/checkpoint.codec.ts is the container format underneath.
 */
import { createHash } from 'node:crypto';
import * as tf from '@tensorflow/tfjs';

import {
  CheckpointError,
  decodeCheckpoint,
  encodeCheckpoint,
  type CheckpointState,
  type CheckpointTensor,
} from '../checkpoint/checkpoint.codec';
import type { AdamWOptions, AdamWState } from './adamw.optimizer';
import type { BestValidation } from './evaluation';
import type { StepMetrics } from './trainer.types';

/** The loop's mutable state besides the tensors: with them, everything a resume needs. */
export interface LoopState {
  /** Optimizer steps completed. */
  step: number;
  /** 0-based epoch the next step belongs to. */
  epochIndex: number;
  /** Permutation of the training examples for `epochIndex`. */
  order: number[];
  /** Index into `order` of the next example to train on. */
  cursor: number;
  history: StepMetrics[];
  /** Target tokens scored over the run. */
  targetTokens: number;
  /** Real tokens read over the run. */
  tokens: number;
  best: BestValidation;
}

/** What a checkpoint must agree with to belong to this run. */
export interface RunIdentity {
  /** Resolved run configuration: what shapes the trajectory. */
  config: Record<string, unknown>;
  configSha256: string;
  trainSha256: string;
  validationSha256: string | null;
  trainExamples: number;
  totalSteps: number;
  stepsPerEpoch: number;
  seed: number;
  /** The validation data must match too (early stopping acts on it). */
  checkValidation: boolean;
}

export interface TrainerStateInput {
  identity: RunIdentity;
  loop: LoopState;
  /** Trainable values by stable name, with their variables' shapes. */
  params: Map<string, Float32Array>;
  shapes: Map<string, number[]>;
  optimizer: AdamWState;
  optimizerOptions: AdamWOptions;
  adapter: { name: string; loraConfig: Record<string, unknown> } | null;
  lineage: Record<string, string | null>;
}

export interface RestoredTrainerState {
  state: CheckpointState;
  loop: LoopState;
  params: Map<string, Float32Array>;
  optimizer: AdamWState;
}

/** Canonical JSON (sorted keys) so equal configs hash equally whatever the key order. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** sha256 of the config's canonical JSON: the run identity a checkpoint records. */
export function runConfigSha256(config: Record<string, unknown>): string {
  return createHash('sha256').update(canonicalJson(config)).digest('hex');
}

/** Host copies of the trainable values. Asynchronous reads: webgpu has no synchronous one. */
export async function readParams(
  variables: Map<string, tf.Variable>,
): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [name, variable] of variables)
    out.set(name, new Float32Array(await variable.data<'float32'>()));
  return out;
}

/** `readParams` with synchronous reads (not on webgpu). */
export function readParamsSync(variables: Map<string, tf.Variable>): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const [name, variable] of variables) out.set(name, new Float32Array(variable.dataSync()));
  return out;
}

/** Assigns host values to the trainable variables: every one, no more, each of its size. */
export function assignParams(
  variables: Map<string, tf.Variable>,
  params: Map<string, Float32Array>,
): void {
  for (const [name, variable] of variables) {
    const data = params.get(name);
    if (!data) throw new CheckpointError(`checkpoint has no values for "${name}"`);
    if (data.length !== variable.size) {
      throw new CheckpointError(
        `checkpoint "${name}" has ${data.length} values, expected ${variable.size}`,
      );
    }
    tf.tidy(() => variable.assign(tf.tensor(data, variable.shape))); // [param shape]
  }
  const extra = [...params.keys()].filter((k) => !variables.has(k));
  if (extra.length > 0)
    throw new CheckpointError(`checkpoint has unknown parameters: ${extra.join(', ')}`);
}

/** The complete training state as one blob (see checkpoint.codec.ts). */
export function encodeTrainerState(input: TrainerStateInput): Uint8Array {
  const { identity, loop, optimizer, optimizerOptions } = input;
  const withShapes = (map: Map<string, Float32Array>) => {
    const out = new Map<string, CheckpointTensor>();
    for (const [name, data] of map) out.set(name, { shape: input.shapes.get(name)!, data });
    return out;
  };
  const state: CheckpointState = {
    step: loop.step,
    totalSteps: identity.totalSteps,
    stepsPerEpoch: identity.stepsPerEpoch,
    epoch: loop.epochIndex,
    data: {
      order: loop.order,
      cursor: loop.cursor,
      trainSha256: identity.trainSha256,
      validationSha256: identity.validationSha256,
      trainExamples: identity.trainExamples,
    },
    optimizer: {
      type: 'adamw',
      iteration: optimizer.iteration,
      beta1: optimizerOptions.beta1,
      beta2: optimizerOptions.beta2,
      epsilon: optimizerOptions.epsilon,
      weightDecay: optimizerOptions.weightDecay,
    },
    rng: {
      seed: identity.seed,
      algorithm: 'mulberry32 seeded with deriveSeed(seed, label) (FNV-1a)',
      streams: {
        shuffle: 'label "shuffle:<epoch>", Fisher-Yates',
        dropout: 'label "dropout:<step>:<micro-batch>", tf.dropout seed',
        loraInit: 'deriveSeed(seed, <module path>), kaiming-uniform A, zero B',
      },
    },
    configSha256: identity.configSha256,
    config: identity.config,
    adapter: input.adapter,
    earlyStopping: {
      bestValidLoss: loop.best.validLoss,
      bestStep: loop.best.step,
      evalsWithoutImprovement: loop.best.evalsWithoutImprovement,
    },
    metrics: loop.history,
    counters: { targetTokens: loop.targetTokens, tokens: loop.tokens },
    lineage: input.lineage,
    createdAt: new Date().toISOString(),
  };
  return encodeCheckpoint({
    state,
    params: withShapes(input.params),
    moments: { m: withShapes(optimizer.m), v: withShapes(optimizer.v) },
    best: loop.best.params ? withShapes(loop.best.params) : null,
  });
}

/**
 * Decodes a blob written by `encodeTrainerState` and checks that it belongs to this run: the
 * configuration and the training data must hash the same (`CheckpointError` otherwise,
 * naming what differs).
 */
export function decodeTrainerState(blob: Uint8Array, identity: RunIdentity): RestoredTrainerState {
  const checkpoint = decodeCheckpoint(blob);
  const { state } = checkpoint;
  if (state.configSha256 !== identity.configSha256) {
    const theirs = state.config ?? {};
    const differing = Object.keys({ ...theirs, ...identity.config }).filter(
      (key) => canonicalJson(theirs[key]) !== canonicalJson(identity.config[key]),
    );
    throw new CheckpointError(
      `checkpoint belongs to another run configuration (differs in: ${differing.join(', ') || 'unknown'})`,
    );
  }
  if (state.data.trainSha256 !== identity.trainSha256) {
    throw new CheckpointError(
      'checkpoint was written for different training data (sha256 differs)',
    );
  }
  if (identity.checkValidation && state.data.validationSha256 !== identity.validationSha256) {
    throw new CheckpointError(
      'checkpoint was written for different validation data (sha256 differs)',
    );
  }
  if (state.data.order.length !== identity.trainExamples || state.step > identity.totalSteps) {
    throw new CheckpointError('checkpoint data order or step does not fit this run');
  }
  const toHost = (map: Map<string, CheckpointTensor>) => {
    const out = new Map<string, Float32Array>();
    for (const [name, tensor] of map) out.set(name, tensor.data);
    return out;
  };
  return {
    state,
    loop: {
      step: state.step,
      epochIndex: state.epoch,
      order: [...state.data.order],
      cursor: state.data.cursor,
      history: [...state.metrics],
      targetTokens: state.counters.targetTokens,
      tokens: state.counters.tokens,
      best: {
        validLoss: state.earlyStopping.bestValidLoss,
        step: state.earlyStopping.bestStep,
        evalsWithoutImprovement: state.earlyStopping.evalsWithoutImprovement,
        params: checkpoint.best ? toHost(checkpoint.best) : null,
      },
    },
    params: toHost(checkpoint.params),
    optimizer: {
      iteration: state.optimizer.iteration,
      m: toHost(checkpoint.moments.m),
      v: toHost(checkpoint.moments.v),
    },
  };
}
