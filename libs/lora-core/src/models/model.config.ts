/**
 * Typed view of a Hugging Face `config.json` for the two supported architectures. Field
 * defaults are those of transformers' `GPT2Config` and `LlamaConfig`, so a config that
 * omits a field means what it means in transformers. Settings that change the maths and are
 * not implemented are rejected with a `ModelConfigError` naming the key: a model must never
 * load silently wrong.
 */
import { configIntProblem } from '@lorafleet/data';

import { ModelConfigError } from './model.errors';

export type ModelType = 'gpt2' | 'llama';

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

export interface LlamaConfig extends CommonConfig {
  modelType: 'llama';
  intermediateSize: number;
  numKeyValueHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  attentionBias: boolean;
  mlpBias: boolean;
}

export type ModelConfig = Gpt2Config | LlamaConfig;

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

function parseLlama(json: Record<string, unknown>, r: ConfigReader): LlamaConfig {
  const hiddenSize = r.int('hidden_size', 4096);
  const numHeads = r.int('num_attention_heads', 32);
  const numKeyValueHeads = r.int('num_key_value_heads', numHeads);
  if (numHeads % numKeyValueHeads !== 0) {
    throw new ModelConfigError(
      `config.json: num_attention_heads (${numHeads}) is not a multiple of num_key_value_heads (${numKeyValueHeads})`,
      'num_key_value_heads',
    );
  }
  const headDimRaw = r.get('head_dim');
  const headDim =
    headDimRaw === null || headDimRaw === undefined ? hiddenSize / numHeads : r.int('head_dim');
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) {
    throw new ModelConfigError(
      `config.json: head dimension ${headDim} must be an even integer (rotary pairs)`,
      'head_dim',
    );
  }
  const hiddenAct = r.str('hidden_act', 'silu');
  if (hiddenAct !== 'silu') {
    throw new ModelConfigError(
      `config.json: hidden_act "${hiddenAct}" is not supported for llama (only silu)`,
      'hidden_act',
    );
  }
  return {
    modelType: 'llama',
    vocabSize: r.int('vocab_size', 32000),
    hiddenSize,
    numLayers: r.int('num_hidden_layers', 32),
    numHeads,
    maxPositions: r.int('max_position_embeddings', 2048),
    tieWordEmbeddings: r.bool('tie_word_embeddings', false),
    intermediateSize: r.int('intermediate_size', 11008),
    numKeyValueHeads,
    headDim,
    rmsNormEps: r.num('rms_norm_eps', 1e-6),
    ropeTheta: r.num('rope_theta', 10000),
    ropeScaling: parseRopeScaling(r.get('rope_scaling')),
    attentionBias: r.bool('attention_bias', false),
    mlpBias: r.bool('mlp_bias', false),
    raw: json,
  };
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
      return parseLlama(json, r);
    default:
      throw new ModelConfigError(
        `config.json: model_type ${JSON.stringify(modelType)} is not supported (supported: gpt2, llama)`,
        'model_type',
      );
  }
}
