/**
 * The trainer's memory checks before step 1 (issue 13): the wasm heap, webgpu's binding and
 * device limits, and `LORAFLEET_MEMORY_LIMIT_MB`. The estimate itself is config-only arithmetic
 * and lives in libs/data (`estimateTrainingMemory`), so the API's job estimate (issue 20) and
 * these checks use one estimator; its names are re-exported here so lora-core's callers and
 * exports are unchanged.
 */
import { readFileSync } from 'node:fs';
import { totalmem } from 'node:os';

import {
  WASM_HEAP_BUDGET_BYTES,
  estimateTrainingMemory,
  linearModuleTemplates,
  webgpuDeviceBytes,
  type MemoryEstimate,
  type MemoryEstimateInput as ConfigMemoryEstimateInput,
} from '@lorafleet/data';
import type { ModelConfig } from '../models/model.config';
import { loraTargetSpecs } from '../params/parameter-count.util';
import { TrainingConfigError } from '../trainer/trainer.types';

export {
  HEAD_BLOCK_FLOATS,
  WASM_HEAP_BUDGET_BYTES,
  estimateTrainingMemory,
  wasmHeapBytes,
  webgpuDeviceBytes,
  type MemoryEstimate,
} from '@lorafleet/data';

const MIB = 1024 * 1024;

/** The estimate's input with lora-core's parsed config (a superset of the shape it reads). */
export interface MemoryEstimateInput extends ConfigMemoryEstimateInput {
  config: ModelConfig;
}

/**
 * A run whose wasm-heap part cannot fit the wasm backend's 4 GiB, whatever the machine has:
 * refused before step 1 instead of aborting in the middle. Not a `MemoryLimitError`: a worker
 * with a larger limit on the same backend would not fit it either, so it is not handed back.
 */
export class WasmHeapLimitError extends TrainingConfigError {
  override readonly name: string = 'WasmHeapLimitError';
  constructor(
    readonly heapMb: number,
    advice: string,
  ) {
    super(
      `this run needs about ${heapMb.toLocaleString('en-US')} MiB of activations and adapter state in ` +
        `the wasm heap, more than the ${Math.floor(WASM_HEAP_BUDGET_BYTES / MIB).toLocaleString('en-US')} MiB ` +
        `the wasm backend can use. ${advice}`,
      'memory',
    );
  }
}

/**
 * The largest buffer a LoRA training step must bind whole: an activation (a linear layer's
 * output for B·T tokens, the attention scores), the position embedding, or one row of a frozen
 * weight. Frozen weights themselves are not candidates: on webgpu a weight past the binding
 * limit is kept as row blocks (models/row-blocked.matrix.ts), so only its row must fit. The
 * fused head's logits come in row chunks sized to the limit (models/head-loss.ts); only an
 * adapter on `lm_head` or a soft-capped head makes whole [B·T, V] logits.
 */
export function largestTrainingBuffer(input: MemoryEstimateInput): { what: string; bytes: number } {
  const { config, batchSize, seqLength } = input;
  const tokens = batchSize * seqLength;
  const C = config.hiddenSize;
  const targets = loraTargetSpecs(config, input.lora);
  const wholeLogits =
    (config.modelType !== 'gpt2' && config.finalLogitSoftcap !== null) ||
    targets.some((t) => t.path === 'lm_head');
  const linears = linearModuleTemplates(config).filter((t) => t.path !== 'lm_head');
  const widest = linears.reduce((a, b) => (b.outFeatures > a.outFeatures ? b : a));
  const widestRow = linears.reduce((a, b) => (b.inFeatures > a.inFeatures ? b : a));
  const name = (path: string) => path.slice(path.lastIndexOf('.') + 1);
  const candidates = [
    {
      what: `the attention scores [${batchSize}, ${config.numHeads}, ${seqLength}, ${seqLength}]`,
      bytes: batchSize * config.numHeads * seqLength * seqLength * 4,
    },
    {
      what: `the ${name(widest.path)} output [${tokens}, ${widest.outFeatures}]`,
      bytes: tokens * widest.outFeatures * 4,
    },
    {
      what: `one row of the ${name(widestRow.path)} weight [${widestRow.inFeatures}]`,
      bytes: widestRow.inFeatures * 4,
    },
    { what: `one row of the token embedding [${C}]`, bytes: C * 4 },
  ];
  if (config.modelType === 'gpt2') {
    candidates.push({
      what: `the position embedding [${config.maxPositions}, ${C}]`,
      bytes: config.maxPositions * C * 4,
    });
  }
  if (wholeLogits) {
    candidates.push({
      what: `the logits [${tokens}, ${config.vocabSize}] (an adapter on lm_head or a soft-capped head makes them whole)`,
      bytes: tokens * config.vocabSize * 4,
    });
  }
  return candidates.reduce((a, b) => (b.bytes > a.bytes ? b : a));
}

/**
 * A buffer the run needs is larger than the GPU adapter can bind (`maxStorageBufferBindingSize`
 * on webgpu), and it is one that cannot be split into blocks. Refused before any weight is
 * uploaded.
 */
export class DeviceBufferLimitError extends TrainingConfigError {
  override readonly name: string = 'DeviceBufferLimitError';
  constructor(what: string, bytes: number, limitBytes: number) {
    super(
      `${what} needs ${formatBytes(bytes)} in one buffer, more than the ${formatBytes(limitBytes)} this webgpu ` +
        'adapter can bind (maxStorageBufferBindingSize; weights past it are split into row blocks, this cannot be). ' +
        'A smaller batch or max_seq_length shrinks activations; otherwise train it on a CPU backend ' +
        '(wasm-blas), on tfjs-node-gpu, or on a GPU whose adapter allows larger bindings.',
      'memory',
    );
  }
}

/**
 * WebGPU exposes no total device memory, so the operator states it: `LORAFLEET_GPU_MEMORY_MB`
 * (e.g. from `nvidia-smi --query-gpu=memory.total`). Null when unset: then only the per-buffer
 * limit is checked.
 */
export function gpuMemoryLimitMbFromEnv(env: NodeJS.ProcessEnv = process.env): number | null {
  const raw = env.LORAFLEET_GPU_MEMORY_MB?.trim();
  if (raw === undefined || raw === '') return null;
  if (!/^[1-9][0-9]*$/.test(raw)) {
    throw new TrainingConfigError(
      `LORAFLEET_GPU_MEMORY_MB="${raw}" must be a positive whole number of MiB`,
      'LORAFLEET_GPU_MEMORY_MB',
    );
  }
  return Number(raw);
}

/** A run whose device part exceeds `LORAFLEET_GPU_MEMORY_MB`; refused before any upload. */
export class DeviceMemoryLimitError extends TrainingConfigError {
  override readonly name: string = 'DeviceMemoryLimitError';
  constructor(
    readonly deviceMb: number,
    readonly limitMb: number,
    advice: string,
  ) {
    super(
      `this run needs about ${deviceMb.toLocaleString('en-US')} MiB of GPU memory (weights, adapter state, ` +
        `activations) but the GPU has ${limitMb.toLocaleString('en-US')} MiB (LORAFLEET_GPU_MEMORY_MB). ${advice}`,
      'memory',
    );
  }
}

/**
 * The webgpu pre-flight: the largest unsplittable buffer within the binding limit, and the
 * device part of the estimate within the GPU's memory when that is known.
 */
export function checkWebgpuFits(
  input: MemoryEstimateInput,
  estimate: MemoryEstimate,
  device: { bindingLimitBytes: number; memoryLimitMb: number | null },
): void {
  const largest = largestTrainingBuffer(input);
  if (largest.bytes > device.bindingLimitBytes) {
    throw new DeviceBufferLimitError(largest.what, largest.bytes, device.bindingLimitBytes);
  }
  const deviceMb = Math.ceil(webgpuDeviceBytes(estimate) / MIB);
  if (device.memoryLimitMb !== null && deviceMb > device.memoryLimitMb) {
    throw new DeviceMemoryLimitError(deviceMb, device.memoryLimitMb, memoryAdvice(input));
  }
}

/** MiB from 1 MiB up (as the other memory messages), KiB or bytes below (forced small limits). */
function formatBytes(bytes: number): string {
  if (bytes >= MIB) return `${Math.ceil(bytes / MIB).toLocaleString('en-US')} MiB`;
  return bytes >= 1024 ? `${Math.ceil(bytes / 1024)} KiB` : `${bytes} bytes`;
}

/**
 * `LORAFLEET_MEMORY_LIMIT_MB`, else the cgroup's memory limit, else 90% of RAM. A malformed
 * value is an error naming the variable (the worker and the CLI refuse to start on it).
 */
export function memoryLimitMbFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.LORAFLEET_MEMORY_LIMIT_MB?.trim();
  if (raw !== undefined && raw !== '') {
    if (!/^[1-9][0-9]*$/.test(raw)) {
      throw new TrainingConfigError(
        `LORAFLEET_MEMORY_LIMIT_MB="${raw}" must be a positive whole number of MiB`,
        'LORAFLEET_MEMORY_LIMIT_MB',
      );
    }
    return Number(raw);
  }
  const ram = Math.floor((0.9 * totalmem()) / MIB);
  const cgroup = cgroupLimitBytes();
  return cgroup === null ? ram : Math.min(ram, Math.floor(cgroup / MIB));
}

/** The cgroup v2 (`memory.max`) or v1 (`memory.limit_in_bytes`) limit, null when unlimited. */
function cgroupLimitBytes(): number | null {
  for (const path of ['/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes']) {
    let text: string;
    try {
      text = readFileSync(path, 'utf8').trim();
    } catch {
      continue;
    }
    if (text === 'max') return null;
    const value = Number(text);
    // cgroup v1 reports "unlimited" as a huge page-aligned number.
    if (Number.isFinite(value) && value > 0 && value < 2 ** 60) return value;
    return null;
  }
  return null;
}

/** A run whose estimate exceeds the memory limit; thrown before any weight is loaded. */
export class MemoryLimitError extends TrainingConfigError {
  override readonly name: string = 'MemoryLimitError';
  constructor(
    readonly estimateMb: number,
    readonly limitMb: number,
    advice: string,
  ) {
    super(
      `this run needs about ${estimateMb.toLocaleString('en-US')} MiB but the memory limit is ` +
        `${limitMb.toLocaleString('en-US')} MiB (LORAFLEET_MEMORY_LIMIT_MB). ${advice}`,
      'memory',
    );
  }
}

/**
 * What to change, in order of how much each saves for this run. With the limit, a run whose
 * frozen weights alone exceed it is told so: shorter sequences or checkpointing cannot help.
 */
export function memoryAdvice(input: MemoryEstimateInput, limitMb?: number | null): string {
  const weightsMb = Math.ceil(estimateTrainingMemory(input).parts.frozenWeights / MIB);
  if (limitMb !== undefined && limitMb !== null && weightsMb > limitMb) {
    return (
      `The frozen base weights alone take about ${weightsMb.toLocaleString('en-US')} MiB: ` +
      'run it on a worker with more memory (LORAFLEET_MEMORY_LIMIT_MB) or on a GPU backend.'
    );
  }
  const tips: string[] = [];
  if (!input.gradientCheckpointing) {
    tips.push(
      'turn on gradient checkpointing (--gradient-checkpointing, training.gradient_checkpointing)',
    );
  }
  if (input.batchSize > 1) tips.push(`lower the batch size (now ${input.batchSize})`);
  tips.push(`shorten max_seq_length (the longest example keeps ${input.seqLength} tokens)`);
  tips.push('or run it on a worker with more memory or a GPU backend');
  return `To fit: ${tips.join(', ')}.`;
}
