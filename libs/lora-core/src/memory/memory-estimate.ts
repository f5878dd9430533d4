/**
 * Pre-flight memory estimate of a LoRA training run, from config.json and the run's shape
 * alone (issue 13): the run is refused before step 1 when it cannot fit
 * `LORAFLEET_MEMORY_LIMIT_MB`, instead of dying in the middle with a wasm abort.
 *
 * The model of memory follows where the trainer keeps things (docs/trainer.md, "Memory"):
 * - frozen base weights on the host, outside the wasm heap (f32, or bf16/f16 as stored);
 * - LoRA parameters, their gradients and AdamW's two moments (4 copies, f32);
 * - activations saved for backward, per block, for B·T tokens; with gradient checkpointing
 *   only each block's input is kept, plus one block's activations while it is recomputed;
 * - the fused LM-head/cross-entropy works on one chunk of rows at a time, so `[B·T, V]`
 *   logits never exist whole;
 * - a fixed runtime overhead (Node, tfjs, the wasm module).
 * The per-block coefficients were measured with `npm run bench:train -- --model-shape …`
 * (docs/benchmarks.md) and round up, so a run that the estimate admits fits.
 */
import { readFileSync } from 'node:fs';
import { totalmem } from 'node:os';

import type { LoraConfig } from '../lora/lora.config';
import type { ModelConfig } from '../models/model.config';
import { HEAD_BLOCK_FLOATS } from '../backend/host-weight.kernels';
import { linearModuleTemplates } from '@lorafleet/data';
import {
  countBaseParameters,
  countLoraTargets,
  loraTargetSpecs,
} from '../params/parameter-count.util';
import { TrainingConfigError } from '../trainer/trainer.types';

const MIB = 1024 * 1024;

export interface MemoryEstimateInput {
  config: ModelConfig;
  batchSize: number;
  /** Longest sequence of a micro-batch (max_seq_length, or less when every example is shorter). */
  seqLength: number;
  lora: Pick<LoraConfig, 'r' | 'targetModules' | 'excludeModules'>;
  /** Bytes each frozen weight takes where it is kept: 4 (f32) or 2 (bf16/f16 kept as stored). */
  weightBytesPerParameter: number;
  gradientCheckpointing: boolean;
}

export interface MemoryEstimate {
  totalBytes: number;
  /** Named parts of the total (bytes), for the pre-flight line and the docs. */
  parts: {
    frozenWeights: number;
    adapterAndOptimizer: number;
    activations: number;
    head: number;
    runtime: number;
  };
}

/** Bytes of activations one block saves for backward, per token, in f32. */
function blockActivationBytesPerToken(config: ModelConfig, seqLength: number): number {
  const C = config.hiddenSize;
  if (config.modelType === 'gpt2') {
    const H = config.numHeads;
    // Norm inputs/outputs, q/k/v and their head layouts, the attention output, MLP input,
    // hidden and activation, residuals: about 14·C + 3·inner floats a token, plus the
    // attention probabilities (H·T a token) kept by the fused attention.
    return 4 * (14 * C + 3 * config.innerSize + 2 * H * seqLength);
  }
  const { numHeads: H, numKeyValueHeads: KV, headDim: D, intermediateSize: I } = config;
  // Norm inputs and outputs, q (H·D) and k/v (KV·D) before and after RoPE, the attention
  // output, SwiGLU's gate and up and the down projection's input (4·I with the gradients in
  // flight), residuals; plus the attention probabilities recomputed in backward. Fitted to
  // the measured peaks (test/memory-estimate.spec.ts), rounding up.
  return 4 * (6 * C + 3 * H * D + 4 * KV * D + 4 * I + 2 * H * seqLength);
}

/** The estimate for one run; pure arithmetic on the config (no weights are touched). */
export function estimateTrainingMemory(input: MemoryEstimateInput): MemoryEstimate {
  const { config, batchSize, seqLength, lora } = input;
  const tokens = batchSize * seqLength;
  const C = config.hiddenSize;
  const frozenWeights = countBaseParameters(config) * input.weightBytesPerParameter;
  const loraParameters = countLoraTargets(config, lora).parameters;
  // Parameter, gradient (and its accumulation), AdamW m and v.
  const adapterAndOptimizer = loraParameters * 4 * 5;
  const perBlock = tokens * blockActivationBytesPerToken(config, seqLength);
  const residualStream = tokens * C * 4;
  const activations = input.gradientCheckpointing
    ? config.numLayers * residualStream + 2 * perBlock
    : config.numLayers * perBlock + 2 * perBlock; // + the gradients in flight during backward
  // One block of logits (backend/host-weight.kernels.ts; the tensor path's chunks are
  // smaller), plus the final hidden states and their gradient.
  // A soft-capped head (Gemma 2) runs through autodiff on whole logits instead (models/
  // causal-lm.model.ts `fusedHeadFor`): raw and capped logits, the log-softmax and the gradient.
  const softcapped = config.modelType !== 'gpt2' && config.finalLogitSoftcap !== null;
  const head =
    (softcapped
      ? 4 * tokens * config.vocabSize
      : Math.min(tokens, Math.max(1, Math.floor(HEAD_BLOCK_FLOATS / config.vocabSize))) *
        config.vocabSize) *
      4 +
    2 * residualStream;
  const runtime = 400 * MIB;
  const parts = { frozenWeights, adapterAndOptimizer, activations, head, runtime };
  const totalBytes = Object.values(parts).reduce((a, b) => a + b, 0);
  return { totalBytes, parts };
}

/** The wasm backend's address space (tfjs-backend-wasm's `maximum` memory), minus headroom. */
export const WASM_HEAP_BUDGET_BYTES = 4 * 1024 * MIB - 256 * MIB;

/**
 * The part of the estimate that lives in the wasm heap when training runs on the wasm
 * backend: everything but the frozen weights when those are in host memory (`*-blas`).
 */
export function wasmHeapBytes(estimate: MemoryEstimate, hostWeights: boolean): number {
  const { frozenWeights, adapterAndOptimizer, activations, head } = estimate.parts;
  return adapterAndOptimizer + activations + head + (hostWeights ? 0 : frozenWeights);
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
 * The part of the estimate that lives in GPU memory on webgpu: everything but the runtime
 * (Node, tfjs and Dawn stay on the host). tfjs-webgpu pools released buffers for reuse and
 * does not hand them back, so the device's peak is at least this.
 */
export function webgpuDeviceBytes(estimate: MemoryEstimate): number {
  const { frozenWeights, adapterAndOptimizer, activations, head } = estimate.parts;
  return frozenWeights + adapterAndOptimizer + activations + head;
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
