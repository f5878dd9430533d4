/**
 * Training checkpoints as one self-describing blob (DESIGN §2, issue 4 item 3).
 *
 * The container is a safetensors file, so any safetensors reader (Python's included) can
 * open it: float32 tensors for the trainable parameters, both AdamW moments and the best
 * evaluated parameters, plus `__metadata__`:
 *
 *   format          "lorafleet.checkpoint"
 *   version         "1"
 *   tensors_sha256  sha256 over every tensor's little-endian bytes, in name order
 *   state           JSON: step, epoch, data order and cursor, optimizer iteration and
 *                   options, RNG description, config and data hashes, resolved config,
 *                   adapter config, early-stopping state, metric history, lineage
 *
 * Tensor names: `param/<name>`, `adamw.m/<name>`, `adamw.v/<name>`, `best/<name>`, where
 * `<name>` is the trainable variable's stable name (e.g. `transformer.h.0.attn.c_attn.lora_A`,
 * tfjs layout [in, r]). Float32 survives the round trip bit for bit, which is what makes a
 * resumed run byte-identical to an uninterrupted one.
 */
import { createHash } from 'node:crypto';

import { SafetensorsError } from '../safetensors/safetensors.error';
import {
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensors,
  type SafetensorsInput,
} from '../safetensors/safetensors.codec';
import type { StepMetrics } from '../trainer/trainer.types';

export const CHECKPOINT_FORMAT = 'lorafleet.checkpoint';
export const CHECKPOINT_VERSION = 1;

/** A checkpoint blob is unreadable, or belongs to another run (config or data differ). */
export class CheckpointError extends Error {
  override readonly name = 'CheckpointError';
}

export interface CheckpointTensor {
  shape: number[];
  data: Float32Array;
}

/** Everything in a checkpoint's JSON state (tensors travel separately). */
export interface CheckpointState {
  /** Optimizer steps completed. */
  step: number;
  totalSteps: number;
  stepsPerEpoch: number;
  /** 0-based epoch the next step belongs to. */
  epoch: number;
  data: {
    /** Permutation of the training examples for `epoch`. */
    order: number[];
    /** Index into `order` of the next example to train on. */
    cursor: number;
    trainSha256: string;
    validationSha256: string | null;
    trainExamples: number;
  };
  optimizer: {
    type: 'adamw';
    iteration: number;
    beta1: number;
    beta2: number;
    epsilon: number;
    weightDecay: number;
  };
  /**
   * The trainer's randomness is counter-based: every stream is derived from the seed and a
   * label (mulberry32 seeded with `deriveSeed(seed, label)`), so the seed plus `step` and
   * `epoch` above is the whole RNG state. Recorded so a reader knows how to continue.
   */
  rng: { seed: number; algorithm: string; streams: Record<string, string> };
  /** sha256 of the canonical JSON of `config`; a resume must present the same. */
  configSha256: string;
  /** Resolved run configuration (hyperparameters, LoRA config, model), for humans and audits. */
  config: Record<string, unknown>;
  /** Adapter being trained (LoRA mode), or null in full-parameter mode. */
  adapter: { name: string; loraConfig: Record<string, unknown> } | null;
  earlyStopping: {
    bestValidLoss: number | null;
    bestStep: number | null;
    evalsWithoutImprovement: number;
  };
  /** Per-step metrics so far, so a resumed run's CSV covers the whole run. */
  metrics: StepMetrics[];
  counters: { targetTokens: number; tokens: number };
  lineage: Record<string, string | null>;
  createdAt: string;
}

export interface TrainerCheckpoint {
  state: CheckpointState;
  params: Map<string, CheckpointTensor>;
  moments: { m: Map<string, CheckpointTensor>; v: Map<string, CheckpointTensor> };
  /** Parameters at the best evaluation (early stopping), when there was one. */
  best: Map<string, CheckpointTensor> | null;
}

const PREFIX = { param: 'param/', m: 'adamw.m/', v: 'adamw.v/', best: 'best/' } as const;

function tensorsSha256(tensors: Map<string, SafetensorsInput>): string {
  const hash = createHash('sha256');
  for (const name of [...tensors.keys()].sort()) {
    const data = tensors.get(name)!.data;
    hash.update(name);
    // Float32Array bytes are little-endian on every platform Node runs on (x64, arm64).
    hash.update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }
  return hash.digest('hex');
}

/** JSON that survives NaN/Infinity in metrics (JSON.stringify would write null). */
function stringifyState(state: CheckpointState): string {
  return JSON.stringify(state, (_key, value: unknown) =>
    typeof value === 'number' && !Number.isFinite(value) ? String(value) : value,
  );
}

function parseState(text: string): CheckpointState {
  return JSON.parse(text, (_key, value: unknown) =>
    value === 'NaN'
      ? NaN
      : value === 'Infinity'
        ? Infinity
        : value === '-Infinity'
          ? -Infinity
          : value,
  ) as CheckpointState;
}

export function encodeCheckpoint(checkpoint: TrainerCheckpoint): Uint8Array {
  const tensors = new Map<string, SafetensorsInput>();
  const put = (prefix: string, map: Map<string, CheckpointTensor>) => {
    for (const [name, tensor] of map) tensors.set(`${prefix}${name}`, tensor);
  };
  put(PREFIX.param, checkpoint.params);
  put(PREFIX.m, checkpoint.moments.m);
  put(PREFIX.v, checkpoint.moments.v);
  if (checkpoint.best) put(PREFIX.best, checkpoint.best);
  return writeSafetensors(tensors, {
    format: CHECKPOINT_FORMAT,
    version: String(CHECKPOINT_VERSION),
    tensors_sha256: tensorsSha256(tensors),
    state: stringifyState(checkpoint.state),
  });
}

/** Parses and verifies a checkpoint blob; every failure is a `CheckpointError`. */
export function decodeCheckpoint(blob: Uint8Array): TrainerCheckpoint {
  let file;
  try {
    file = readSafetensors(blob);
  } catch (error) {
    if (error instanceof SafetensorsError) {
      throw new CheckpointError(`checkpoint is not a readable safetensors blob (${error.message})`);
    }
    throw error;
  }
  const metadata = file.metadata ?? {};
  if (metadata.format !== CHECKPOINT_FORMAT) {
    throw new CheckpointError(
      `not a lorafleet checkpoint (metadata format ${JSON.stringify(metadata.format ?? null)})`,
    );
  }
  if (metadata.version !== String(CHECKPOINT_VERSION)) {
    throw new CheckpointError(
      `checkpoint version ${metadata.version} is not supported (this build reads version ${CHECKPOINT_VERSION})`,
    );
  }
  const all = new Map<string, SafetensorsInput>();
  for (const [name, tensor] of file.tensors)
    all.set(name, { shape: tensor.shape, data: tensor.data });
  if (tensorsSha256(all) !== metadata.tensors_sha256) {
    throw new CheckpointError(
      'checkpoint tensors do not match their recorded sha256 (corrupted blob)',
    );
  }
  let state: CheckpointState;
  try {
    state = parseState(metadata.state ?? '');
  } catch (error) {
    throw new CheckpointError(`checkpoint state is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof state !== 'object' || state === null || !Number.isSafeInteger(state.step)) {
    throw new CheckpointError('checkpoint state has no step');
  }
  const pick = (prefix: string) => {
    const out = new Map<string, CheckpointTensor>();
    for (const [name, tensor] of all) {
      if (name.startsWith(prefix)) out.set(name.slice(prefix.length), tensor);
    }
    return out;
  };
  const best = pick(PREFIX.best);
  return {
    state,
    params: pick(PREFIX.param),
    moments: { m: pick(PREFIX.m), v: pick(PREFIX.v) },
    best: best.size > 0 ? best : null,
  };
}

/** The JSON state only, from the header: no tensor is decoded and the sha256 is not checked. */
export function readCheckpointState(blob: Uint8Array): CheckpointState {
  let metadata: Record<string, string> | undefined;
  try {
    metadata = readSafetensorsHeader(blob).metadata;
  } catch (error) {
    if (error instanceof SafetensorsError)
      throw new CheckpointError(`not a checkpoint (${error.message})`);
    throw error;
  }
  if (metadata?.format !== CHECKPOINT_FORMAT || metadata.state === undefined) {
    throw new CheckpointError('not a lorafleet checkpoint');
  }
  return parseState(metadata.state);
}
