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
  readModelConfig,
  resolveLoraConfig,
  type FineTunePreflight,
} from '@lorafleet/lora-core';
import type { TrainerFailure, TrainerSpec } from './trainer-protocol';

/** A failure already classified for the parent (sent as it is). */
export class ClassifiedError extends Error {
  constructor(readonly failure: TrainerFailure) {
    super(failure.message);
  }
}

/** lora-core's `TrainingConfigError.field` → the REST request field to name as `param`. */
const REQUEST_FIELDS: Record<string, string> = {
  maxSeqLength: 'training.max_seq_length',
  batchSize: 'hyperparameters.batch_size',
  epochs: 'hyperparameters.n_epochs',
  learningRate: 'training.learning_rate',
  lrScheduler: 'training.lr_scheduler',
  seed: 'seed',
  warmupSteps: 'training.warmup_steps',
  weightDecay: 'training.weight_decay',
  gradientAccumulationSteps: 'training.gradient_accumulation_steps',
  maxSteps: 'training.max_steps',
  evalEverySteps: 'training.eval_every_steps',
  r: 'lora.r',
  alpha: 'lora.alpha',
  dropout: 'lora.dropout',
  targetModules: 'lora.target_modules',
};

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
  if (error instanceof TrainingConfigError || error instanceof LoraConfigError) {
    // TrainingConfigError names the option in `field`, LoraConfigError in `key`.
    const named = error as { field?: string; key?: string };
    const param = REQUEST_FIELDS[named.field ?? named.key ?? ''] ?? null;
    return { kind: 'invalid_input', message, param };
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
        batchSize: Math.min(spec.hyperparameters.batch_size, Math.max(1, preflight.examples)),
        seqLength: Math.max(1, preflight.longestKeptTokens),
        lora: resolveLoraConfig(loraOptions(spec), config),
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

/** The job's `lora` object as lora-core's options. */
export function loraOptions(spec: TrainerSpec) {
  return {
    r: spec.lora.r,
    alpha: spec.lora.alpha,
    dropout: spec.lora.dropout,
    useRslora: spec.lora.use_rslora,
    ...(spec.lora.target_modules === undefined ? {} : { targetModules: spec.lora.target_modules }),
  };
}
