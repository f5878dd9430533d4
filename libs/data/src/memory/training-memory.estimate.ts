/**
 * Pre-flight memory estimate of a LoRA training run, from config.json and the run's shape
 * alone (issue 13). It lives here, without tfjs, so the API's estimate (issue 20,
 * `POST /v1/fine_tuning/jobs/estimate`) and the trainer's refusal before step 1 (libs/lora-core
 * `runFineTune`, which re-exports these names) use one estimator.
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
import {
  countBaseParameters,
  countLoraTargets,
  type DecoderParameterShape,
  type Gpt2ParameterShape,
  type LoraTargetSelection,
} from '../models/model-parameters';

const MIB = 1024 * 1024;

/**
 * Logits computed at once by the fused head: [rows, V] ≤ this many floats (128 MiB). Larger
 * blocks keep OpenBLAS on efficient shapes (measured on GPT-2 small at batch 4: 8 Mi floats →
 * 32 Mi, 223 → 245 tokens/s, for about 100 MB more peak RSS). lora-core's head kernel sizes
 * its blocks with this constant, so the estimate and the kernel cannot disagree.
 */
export const HEAD_BLOCK_FLOATS = 32 * 1024 * 1024;

/**
 * The sizes a memory estimate reads: the parameter shape plus the attention heads and Gemma 2's
 * logit soft-cap. lora-core's parsed `ModelConfig` has this shape (and more); libs/data's
 * `ModelFacts.trainingShape` gives it from config.json alone.
 */
export type TrainingMemoryShape =
  | (Gpt2ParameterShape & { numHeads: number })
  | (DecoderParameterShape & { finalLogitSoftcap: number | null });

export interface MemoryEstimateInput {
  config: TrainingMemoryShape;
  batchSize: number;
  /** Longest sequence of a micro-batch (max_seq_length, or less when every example is shorter). */
  seqLength: number;
  lora: LoraTargetSelection;
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
function blockActivationBytesPerToken(config: TrainingMemoryShape, seqLength: number): number {
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
  // the measured peaks (lora-core test/memory-estimate.spec.ts), rounding up.
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
  // One block of logits (lora-core backend/host-weight.kernels.ts; the tensor path's chunks
  // are smaller), plus the final hidden states and their gradient.
  // A soft-capped head (Gemma 2) runs through autodiff on whole logits instead (lora-core
  // models/causal-lm.model.ts `fusedHeadFor`): raw and capped logits, the log-softmax and the
  // gradient.
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
 * The part of the estimate that lives in GPU memory on webgpu: everything but the runtime
 * (Node, tfjs and Dawn stay on the host). tfjs-webgpu pools released buffers for reuse and
 * does not hand them back, so the device's peak is at least this.
 */
export function webgpuDeviceBytes(estimate: MemoryEstimate): number {
  const { frozenWeights, adapterAndOptimizer, activations, head } = estimate.parts;
  return frozenWeights + adapterAndOptimizer + activations + head;
}
