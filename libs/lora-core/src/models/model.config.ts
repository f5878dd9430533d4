/**
 * Typed view of a Hugging Face `config.json` for the supported architectures: GPT-2, and the
 * rotary decoder families (Llama, Mistral, Qwen2, Qwen3, Phi-3, Gemma 2), which share one decoder
 * whose differences are the named options of `DecoderConfig`. Field defaults are those of
 * transformers' `*Config` class of each family, so a config that omits a field means what it
 * means in transformers. Settings that change the maths and are not implemented are rejected
 * with a `ModelConfigError` naming the key: a model must never load silently wrong.
 */
import {
  DECODER_CONFIG_DEFAULTS,
  configIntProblem,
  decoderParameterFlags,
  modelFactsFromConfig,
  readsAttentionBias,
} from '@lorafleet/data';

import { ModelConfigError } from './model.errors';

/** The rotary decoder families: one decoder (llama.model.ts), configured per family. */
export type DecoderModelType = 'llama' | 'mistral' | 'qwen2' | 'qwen3' | 'phi3' | 'gemma2';
export type ModelType = 'gpt2' | DecoderModelType;

export const SUPPORTED_MODEL_TYPES: readonly ModelType[] = [
  'gpt2',
  'llama',
  'mistral',
  'qwen2',
  'qwen3',
  'phi3',
  'gemma2',
];

/** Activations GPT-2 configs name in `activation_function`. */
export type Gpt2Activation =
  'gelu_new' | 'gelu_pytorch_tanh' | 'gelu_fast' | 'gelu' | 'relu' | 'silu';

interface CommonConfig {
  vocabSize: number;
  /** d_model: `n_embd` (gpt2) or `hidden_size` (llama). */
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  /** Longest sequence the position scheme was trained for. */
  maxPositions: number;
  /** Whether `lm_head` shares the token-embedding matrix. */
  tieWordEmbeddings: boolean;
  /** The parsed JSON object, kept so a merged export can write the same config back. */
  raw: Record<string, unknown>;
}

export interface Gpt2Config extends CommonConfig {
  modelType: 'gpt2';
  /** MLP width (`n_inner`, default 4·n_embd). */
  innerSize: number;
  layerNormEpsilon: number;
  activation: Gpt2Activation;
  /** `scale_attn_weights`: divide scores by √head_dim. */
  scaleAttnWeights: boolean;
  /** `scale_attn_by_inverse_layer_idx`: also divide scores by (layer index + 1). */
  scaleAttnByInverseLayerIdx: boolean;
}

export type RopeScaling =
  | { type: 'linear'; factor: number }
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    };

/**
 * A rotary decoder (Llama and the families built like it). Each family is a mapping of its
 * config.json onto these options (see `parseDecoder`); the model code reads only the options.
 */
export interface DecoderConfig extends CommonConfig {
  modelType: DecoderModelType;
  intermediateSize: number;
  numKeyValueHeads: number;
  /** Per-head width; an explicit `head_dim` may differ from hidden/heads (Qwen3, Mistral-Nemo). */
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  /** Biases on q/k/v (Qwen2 always; Llama/Qwen3 `attention_bias`). */
  qkvBias: boolean;
  /** Bias on o_proj (Llama/Qwen3 `attention_bias`; never in Qwen2). */
  oProjBias: boolean;
  mlpBias: boolean;
  /** Per-head RMSNorm of q and k before RoPE (Qwen3 `q_norm`, `k_norm`, weight [D]). */
  qkNorm: boolean;
  /** Fused `qkv_proj` (q, k, v rows) and `gate_up_proj` (gate, up rows), as Phi-3 stores them. */
  fusedProjections: boolean;
  /** RMSNorm scales by (offset + w): 0 for Llama's `w`, 1 for Gemma's `(1 + w)`. */
  normOffset: 0 | 1;
  /** Token embeddings are multiplied by this (Gemma: √hidden in float32), or null. */
  embeddingScale: number | null;
  /** The gated MLP's activation: SwiGLU's silu, or Gemma's GeGLU with tanh-GELU. */
  mlpActivation: 'silu' | 'gelu_tanh';
  /**
   * Gemma 2's sandwich norms: `post_attention_layernorm` normalises the attention output
   * before the residual add, and `pre_`/`post_feedforward_layernorm` wrap the MLP (in Llama,
   * `post_attention_layernorm` is the MLP's input norm).
   */
  sandwichNorms: boolean;
  /** Multiplies q·kᵀ: 1/√head_dim, or Gemma 2's `query_pre_attn_scalar`^−½. */
  attentionScale: number;
  /** Attention scores become cap·tanh(s/cap) before the mask (Gemma 2), or null. */
  attnLogitSoftcap: number | null;
  /** Final logits become cap·tanh(l/cap) (Gemma 2), or null. */
  finalLogitSoftcap: number | null;
  /**
   * Sliding-window attention width, or null when every key is visible. Not implemented as a
   * mask: a sequence up to the window is exact (every key is inside it), a longer one is
   * refused (`ModelConfigError` naming `sliding_window`).
   */
  slidingWindow: number | null;
}

/** The name the Llama-only code used; every rotary family has this shape. */
export type LlamaConfig = DecoderConfig;

export type ModelConfig = Gpt2Config | DecoderConfig;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

class ConfigReader {
  constructor(private readonly json: Record<string, unknown>) {}

  /** A size, held to libs/data's range for `key`: a config must not size allocations at will. */
  int(key: string, fallback?: number): number {
    const value = this.json[key] ?? fallback;
    const problem = configIntProblem(key, value);
    if (problem !== null) throw new ModelConfigError(problem, key);
    return value as number;
  }

  num(key: string, fallback?: number): number {
    const value = this.json[key] ?? fallback;
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
      throw new ModelConfigError(
        `config.json: "${key}" must be a positive number (got ${JSON.stringify(value)})`,
        key,
      );
    }
    return value;
  }

  bool(key: string, fallback: boolean): boolean {
    const value = this.json[key] ?? fallback;
    if (typeof value !== 'boolean') {
      throw new ModelConfigError(
        `config.json: "${key}" must be a boolean (got ${JSON.stringify(value)})`,
        key,
      );
    }
    return value;
  }

  str(key: string, fallback: string): string {
    const value = this.json[key] ?? fallback;
    if (typeof value !== 'string') {
      throw new ModelConfigError(
        `config.json: "${key}" must be a string (got ${JSON.stringify(value)})`,
        key,
      );
    }
    return value;
  }

  get(key: string): unknown {
    return this.json[key];
  }
}

const GPT2_ACTIVATIONS: readonly Gpt2Activation[] = [
  'gelu_new',
  'gelu_pytorch_tanh',
  'gelu_fast',
  'gelu',
  'relu',
  'silu',
];

function parseGpt2(json: Record<string, unknown>, r: ConfigReader): Gpt2Config {
  const hiddenSize = r.int('n_embd', 768);
  const numHeads = r.int('n_head', 12);
  if (hiddenSize % numHeads !== 0) {
    throw new ModelConfigError(
      `config.json: n_embd (${hiddenSize}) is not divisible by n_head (${numHeads})`,
      'n_head',
    );
  }
  if (r.bool('add_cross_attention', false)) {
    throw new ModelConfigError(
      'config.json: "add_cross_attention" (encoder-decoder GPT-2) is not supported',
      'add_cross_attention',
    );
  }
  const activationName = r.str('activation_function', 'gelu_new');
  const activation = activationName === 'swish' ? 'silu' : activationName;
  if (!GPT2_ACTIVATIONS.includes(activation as Gpt2Activation)) {
    throw new ModelConfigError(
      `config.json: activation_function "${activationName}" is not supported`,
      'activation_function',
    );
  }
  const innerRaw = r.get('n_inner');
  return {
    modelType: 'gpt2',
    vocabSize: r.int('vocab_size', 50257),
    hiddenSize,
    numLayers: r.int('n_layer', 12),
    numHeads,
    maxPositions: r.int('n_positions', 1024),
    // GPT2LMHeadModel always ties lm_head to wte unless the config says otherwise.
    tieWordEmbeddings: r.bool('tie_word_embeddings', true),
    innerSize: innerRaw === null || innerRaw === undefined ? 4 * hiddenSize : r.int('n_inner'),
    layerNormEpsilon: r.num('layer_norm_epsilon', 1e-5),
    activation: activation as Gpt2Activation,
    scaleAttnWeights: r.bool('scale_attn_weights', true),
    scaleAttnByInverseLayerIdx: r.bool('scale_attn_by_inverse_layer_idx', false),
    raw: json,
  };
}

function parseRopeScaling(value: unknown): RopeScaling | null {
  if (value === null || value === undefined) return null;
  if (!isObject(value)) {
    throw new ModelConfigError(
      'config.json: "rope_scaling" must be an object or null',
      'rope_scaling',
    );
  }
  const type = value.rope_type ?? value.type;
  const r = new ConfigReader(value);
  switch (type) {
    case 'default':
      return null;
    case 'linear':
      return { type: 'linear', factor: r.num('factor') };
    case 'llama3':
      return {
        type: 'llama3',
        factor: r.num('factor'),
        lowFreqFactor: r.num('low_freq_factor'),
        highFreqFactor: r.num('high_freq_factor'),
        originalMaxPositionEmbeddings: r.int('original_max_position_embeddings'),
      };
    default:
      throw new ModelConfigError(
        `config.json: rope_scaling type ${JSON.stringify(type)} is not supported (supported: default, linear, llama3)`,
        'rope_scaling.rope_type',
      );
  }
}

/** `null` for an absent or null key, else the value as a positive number. */
function optionalNum(r: ConfigReader, key: string, fallback: number | null): number | null {
  const value = r.get(key);
  if (value === null) return null;
  return value === undefined ? fallback : r.num(key);
}

/** `null` for an absent or null key, else the value as a positive integer. */
function optionalInt(r: ConfigReader, key: string): number | null {
  const value = r.get(key);
  return value === null || value === undefined ? null : r.int(key);
}

/**
 * The sliding window a family applies, or null. Mistral and Phi-3 apply `sliding_window`
 * whenever it is set; Qwen2/Qwen3 only with `use_sliding_window: true` (their configs carry a
 * `sliding_window` value that is unused otherwise).
 */
function slidingWindowOf(modelType: DecoderModelType, r: ConfigReader): number | null {
  switch (modelType) {
    case 'llama':
      return null;
    case 'mistral':
    case 'phi3':
      return optionalInt(r, 'sliding_window');
    case 'gemma2':
      // Every other layer slides (transformers: `not bool(layer_idx % 2)`); refusing beyond
      // the window for the whole model keeps every layer exact.
      return r.get('sliding_window') === null ? null : r.int('sliding_window', 4096);
    case 'qwen2':
    case 'qwen3':
      return r.bool('use_sliding_window', false) ? (optionalInt(r, 'sliding_window') ?? 4096) : null;
  }
}

function parseDecoder(
  modelType: DecoderModelType,
  json: Record<string, unknown>,
  r: ConfigReader,
): DecoderConfig {
  const d = DECODER_CONFIG_DEFAULTS[modelType];
  const hiddenSize = r.int('hidden_size', d.hiddenSize);
  const numHeads = r.int('num_attention_heads', d.numHeads);
  const numKeyValueHeads = r.int('num_key_value_heads', d.numKeyValueHeads ?? numHeads);
  if (numHeads % numKeyValueHeads !== 0) {
    throw new ModelConfigError(
      `config.json: num_attention_heads (${numHeads}) is not a multiple of num_key_value_heads (${numKeyValueHeads})`,
      'num_key_value_heads',
    );
  }
  // transformers: `getattr(config, "head_dim", None) or hidden_size // num_attention_heads`.
  const headDim = optionalInt(r, 'head_dim') ?? d.headDim ?? hiddenSize / numHeads;
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) {
    throw new ModelConfigError(
      `config.json: head dimension ${headDim} must be an even integer (rotary pairs)`,
      'head_dim',
    );
  }
  const gemma = modelType === 'gemma2';
  // Gemma 2 names its activation `hidden_activation` (GeGLU with tanh-GELU).
  const actKey = gemma && r.get('hidden_activation') !== undefined ? 'hidden_activation' : 'hidden_act';
  const hiddenAct = r.str(actKey, gemma ? 'gelu_pytorch_tanh' : 'silu');
  const supportedAct = gemma ? 'gelu_pytorch_tanh' : 'silu';
  if (hiddenAct !== supportedAct) {
    throw new ModelConfigError(
      `config.json: ${actKey} "${hiddenAct}" is not supported for ${modelType} (only ${supportedAct})`,
      actKey,
    );
  }
  // Phi-4-mini's partial rotary (RoPE on a fraction of each head) is not implemented.
  const partialRotary = r.get('partial_rotary_factor');
  if (partialRotary !== undefined && partialRotary !== null && partialRotary !== 1) {
    throw new ModelConfigError(
      `config.json: partial_rotary_factor ${JSON.stringify(partialRotary)} is not supported (only 1.0)`,
      'partial_rotary_factor',
    );
  }
  // Llama, Qwen3 and Gemma 2 put `attention_bias` on all four projections; Qwen2 has q/k/v
  // biases and none on o_proj; Mistral and Phi-3 have none.
  const attentionBias = readsAttentionBias(modelType) ? r.bool('attention_bias', false) : false;
  const slidingWindow = slidingWindowOf(modelType, r);
  return {
    modelType,
    vocabSize: r.int('vocab_size', d.vocabSize),
    hiddenSize,
    numLayers: r.int('num_hidden_layers', d.numLayers),
    numHeads,
    maxPositions: r.int('max_position_embeddings', d.maxPositions),
    // Gemma 2's head is tied (Gemma2Config defaults tie_word_embeddings to true).
    tieWordEmbeddings: r.bool('tie_word_embeddings', gemma),
    intermediateSize: r.int('intermediate_size', d.intermediateSize),
    numKeyValueHeads,
    headDim,
    rmsNormEps: r.num('rms_norm_eps', d.rmsNormEps),
    ropeTheta: r.num('rope_theta', 10000),
    ropeScaling: parseRopeScaling(r.get('rope_scaling')),
    // Which tensors exist is libs/data's call, so its config-only counts match this model.
    ...decoderParameterFlags(
      modelType,
      attentionBias,
      modelType === 'llama' ? r.bool('mlp_bias', false) : false,
    ),
    normOffset: gemma ? 1 : 0,
    // transformers: `torch.tensor(hidden_size**0.5, dtype=hidden_states.dtype)`, float32 here.
    embeddingScale: gemma ? Math.fround(Math.sqrt(hiddenSize)) : null,
    mlpActivation: gemma ? 'gelu_tanh' : 'silu',
    attentionScale: gemma ? r.num('query_pre_attn_scalar', 256) ** -0.5 : 1 / Math.sqrt(headDim),
    attnLogitSoftcap: gemma ? optionalNum(r, 'attn_logit_softcapping', 50) : null,
    finalLogitSoftcap: gemma ? optionalNum(r, 'final_logit_softcapping', 30) : null,
    slidingWindow,
    raw: json,
  };
}

/**
 * The longest sequence the model computes exactly: GPT-2's position table, a rotary decoder's
 * sliding window when one applies (longer sequences are refused), else unbounded (RoPE has no
 * table; transformers runs past `max_position_embeddings` too).
 */
export function sequenceLimit(config: ModelConfig): number {
  if (config.modelType === 'gpt2') return config.maxPositions;
  return config.slidingWindow ?? Infinity;
}

/**
 * The context length a run defaults and is held to: the trained positions, within an active
 * sliding window. libs/data's config facts compute it, for the API and the CLI too, so the
 * resolved `max_seq_length` and this check can never disagree.
 */
export function contextLength(config: ModelConfig): number {
  return modelFactsFromConfig(config.raw).contextLength;
}

/** Parses a Hugging Face config.json object (already JSON-decoded). */
export function parseModelConfig(json: unknown): ModelConfig {
  if (!isObject(json)) throw new ModelConfigError('config.json must be a JSON object');
  const r = new ConfigReader(json);
  const modelType = json.model_type;
  switch (modelType) {
    case 'gpt2':
      return parseGpt2(json, r);
    case 'llama':
    case 'mistral':
    case 'qwen2':
    case 'qwen3':
    case 'phi3':
    case 'gemma2':
      return parseDecoder(modelType, json, r);
    default:
      throw new ModelConfigError(
        `config.json: model_type ${JSON.stringify(modelType)} is not supported (supported: ${SUPPORTED_MODEL_TYPES.join(', ')})`,
        'model_type',
      );
  }
}
