/**
 * How the trainer child reports a failure: each error is classified once, here, where
 * lora-core's and libs/data's error types are known (issue 14 item 11), and memory that ran
 * out is described instead of surfacing as `Aborted()` (issue 13). No side effects: the child
 * entry and the unit tests import it.
 */
import { readFileSync } from 'node:fs';
import {
  ChatTemplateError,
  DatasetValidationError,
  TokenizerLoadError,
  isOutOfMemoryError,
  outOfMemoryMessage,
} from '@lorafleet/data';
import {
  LoraConfigError,
  MemoryLimitError,
  ModelConfigError,
  ModelWeightsError,
  NoTrainableTokensError,
  NonFiniteLossError,
  SafetensorsError,
  TrainingConfigError,
  WasmHeapLimitError,
  memoryAdvice,
  loraConfigOf,
  readModelConfig,
  type FineTunePreflight,
} from '@lorafleet/lora-core';
import type { TrainerFailure, TrainerSpec } from './trainer-protocol';

/** A failure already classified for the parent (sent as it is). */
export class ClassifiedError extends Error {
  constructor(readonly failure: TrainerFailure) {
    super(failure.message);
  }
}

/** lora-core's `LoraConfigError.key` (the adapter layer's names) → the request field. */
const LORA_REQUEST_FIELDS: Record<string, string> = {
  r: 'lora.r',
  alpha: 'lora.alpha',
  dropout: 'lora.dropout',
  targetModules: 'lora.target_modules',
};

/** `TrainingConfigError.field` is a spec path, which is the request's path too. */
const SPEC_PATH = /^(seed|(hyperparameters|lora|training)\.[a-z_]+)$/;

/**
 * Classifies a failure once, here, where lora-core's error types are known (issue 14 item
 * 11): bad data, options or model files fail the job at once; only what may be transient is
 * retried.
 */
export function classifyFailure(error: unknown): TrainerFailure {
  if (error instanceof ClassifiedError) return error.failure;
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof MemoryLimitError) {
    return {
      kind: 'memory_limit',
      message,
      param: null,
      estimateMb: error.estimateMb,
      limitMb: error.limitMb,
    };
  }
  if (error instanceof WasmHeapLimitError) {
    // No worker on the same backend could fit it: fail once, no hand-back.
    return { kind: 'out_of_memory', message, param: null };
  }
  if (error instanceof NoTrainableTokensError) {
    return { kind: 'invalid_file', message, param: 'training.max_seq_length' };
  }
  if (error instanceof TrainingConfigError) {
    const field = error.field ?? '';
    return { kind: 'invalid_input', message, param: SPEC_PATH.test(field) ? field : null };
  }
  if (error instanceof LoraConfigError) {
    return { kind: 'invalid_input', message, param: LORA_REQUEST_FIELDS[error.key ?? ''] ?? null };
  }
  if (
    error instanceof DatasetValidationError ||
    error instanceof ChatTemplateError ||
    error instanceof NonFiniteLossError
  ) {
    return { kind: 'invalid_input', message, param: null };
  }
  if (
    error instanceof ModelConfigError ||
    error instanceof ModelWeightsError ||
    error instanceof SafetensorsError ||
    error instanceof TokenizerLoadError
  ) {
    return { kind: 'invalid_model', message, param: null };
  }
  // Memory that ran out outside the run's own catch (the backend's set-up, say): the same
  // report, without the pre-flight's numbers.
  if (isOutOfMemoryError(error)) {
    return {
      kind: 'out_of_memory',
      message: outOfMemoryMessage({ estimateMb: null, limitMb: null, advice: null }),
      param: null,
    };
  }
  return { kind: 'retryable', message, param: null };
}

/** Peak resident memory of this process (VmHWM), MiB; null where /proc is not there. */
export function peakMemoryMb(): number | null {
  try {
    const kib = /VmHWM:\s+(\d+)\s*kB/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
    return kib === undefined ? null : Math.ceil(Number(kib) / 1024);
  } catch {
    return null;
  }
}

/**
 * The user-facing failure for memory that ran out mid-run (a wasm abort): the pre-flight's
 * estimate and lora-core's advice for this run's shape, never the raw `Aborted()` text.
 */
export async function outOfMemoryFailure(
  spec: TrainerSpec,
  preflight: FineTunePreflight | null,
): Promise<TrainerFailure> {
  let advice: string | null = null;
  if (preflight) {
    try {
      const config = await readModelConfig(spec.modelDir);
      advice = memoryAdvice({
        config,
        batchSize: Math.min(spec.spec.hyperparameters.batch_size, Math.max(1, preflight.examples)),
        seqLength: Math.max(1, preflight.longestKeptTokens),
        lora: loraConfigOf(spec.spec.lora, config),
        weightBytesPerParameter: 4,
        gradientCheckpointing: preflight.gradientCheckpointing,
      });
    } catch {
      advice = null; // the generic advice then
    }
  }
  return {
    kind: 'out_of_memory',
    message: outOfMemoryMessage({
      estimateMb: preflight?.memoryEstimateMb ?? null,
      limitMb: preflight?.memoryLimitMb ?? null,
      advice,
    }),
    param: null,
  };
}
