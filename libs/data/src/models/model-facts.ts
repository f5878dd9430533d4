import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

import {
  DEFAULT_BASE_LEARNING_RATE,
  ModelRegistryEntrySchema,
  type ModelRegistryEntry,
} from '@lorafleet/contracts';

import { MODEL_CONFIG_INT_BOUNDS, configIntProblem } from './model-config-bounds';
import {
  countBaseParameters,
  decoderParameterFlags,
  linearModuleTemplates,
  templateLayersMatched,
  type ArchitectureType,
  type DecoderFamily,
} from './model-parameters';
import type { TrainingMemoryShape } from '../memory/training-memory.estimate';

/**
 * What a job needs to know about a base model before it is queued, read from config.json
 * alone (no weights, no tfjs): the architecture, its size, its context length and the names of
 * the linear modules LoRA can target. The API checks a job against these at create, so a bad
 * `max_seq_length` or `target_modules` is a 400 rather than a failed attempt in a worker, and
 * reports them on `GET /v1/models`. The module paths are the ones libs/lora-core builds its
 * layers from (`linearModuleSpecs`, in ./model-parameters).
 */
export interface ModelFacts {
  modelType: ModelFactsType;
  /**
   * Positions the model can attend over: `n_positions` (gpt2), `max_position_embeddings`
   * (the rotary families), and no more than an active `sliding_window`: lora-core refuses a
   * sequence beyond the window rather than attend outside it.
   */
  contextLength: number;
  numLayers: number;
  /** Base-model parameters as PEFT counts them (tied tensors once, no buffers). */
  parameters: number;
  /** Leaf names of the linear modules, e.g. `c_attn`, `q_proj`; `lm_head` when untied. */
  moduleNames: string[];
  /** Module path templates; `{i}` stands for the layer index (0 … numLayers − 1). */
  modulePaths: string[];
  /**
   * The learning rate a `learning_rate_multiplier` of 1 means for this model (DESIGN §4): the
   * model registry entry's `default_learning_rate` ({@link MODEL_REGISTRY_ENTRY_FILE}), else
   * `DEFAULT_BASE_LEARNING_RATE`.
   */
  defaultLearningRate: number;
  /**
   * The sizes the memory estimator reads (../memory/training-memory.estimate), so the API can
   * estimate a run's peak memory from config.json as the trainer does from its parsed config.
   */
  trainingShape: TrainingMemoryShape;
}

/** The optional registry entry beside a model's config.json (contracts' `ModelRegistryEntry`). */
export const MODEL_REGISTRY_ENTRY_FILE = 'lorafleet-model.json';

/** The architectures lorafleet trains (lora-core's `ModelType`). */
export type ModelFactsType = ArchitectureType;

/** The rotary decoder families: Llama's module names, or Phi-3's fused ones. */
type RotaryFamily = DecoderFamily;

/** transformers' `*Config` defaults of the sizes a decoder family's config may omit. */
export interface DecoderConfigDefaults {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  /** undefined: as many as query heads. */
  numKeyValueHeads?: number;
  /** undefined: hidden/heads. */
  headDim?: number;
  maxPositions: number;
  rmsNormEps: number;
}

/**
 * transformers' defaults per family (`LlamaConfig`, `MistralConfig`, `Qwen2Config`, …), so a
 * config that omits a field means what it means in transformers. lora-core's parser reads the
 * same table: a count here and a model built there agree on every omitted size.
 */
export const DECODER_CONFIG_DEFAULTS: Readonly<Record<DecoderFamily, DecoderConfigDefaults>> = {
  llama: {
    vocabSize: 32000,
    hiddenSize: 4096,
    intermediateSize: 11008,
    numLayers: 32,
    numHeads: 32,
    maxPositions: 2048,
    rmsNormEps: 1e-6,
  },
  mistral: {
    vocabSize: 32000,
    hiddenSize: 4096,
    intermediateSize: 14336,
    numLayers: 32,
    numHeads: 32,
    numKeyValueHeads: 8,
    maxPositions: 4096 * 32,
    rmsNormEps: 1e-6,
  },
  qwen2: {
    vocabSize: 151936,
    hiddenSize: 4096,
    intermediateSize: 22016,
    numLayers: 32,
    numHeads: 32,
    maxPositions: 32768,
    rmsNormEps: 1e-6,
  },
  qwen3: {
    vocabSize: 151936,
    hiddenSize: 4096,
    intermediateSize: 22016,
    numLayers: 32,
    numHeads: 32,
    headDim: 128,
    maxPositions: 32768,
    rmsNormEps: 1e-6,
  },
  phi3: {
    vocabSize: 32064,
    hiddenSize: 3072,
    intermediateSize: 8192,
    numLayers: 32,
    numHeads: 32,
    maxPositions: 4096,
    rmsNormEps: 1e-5,
  },
  gemma2: {
    vocabSize: 256000,
    hiddenSize: 2304,
    intermediateSize: 9216,
    numLayers: 26,
    numHeads: 8,
    numKeyValueHeads: 4,
    headDim: 256,
    maxPositions: 8192,
    rmsNormEps: 1e-6,
  },
};

/**
 * The sliding window a family applies (as lora-core's `slidingWindowOf`): Mistral and Phi-3
 * whenever `sliding_window` is set, Qwen2/Qwen3 only with `use_sliding_window: true`.
 */
function activeSlidingWindow(family: RotaryFamily, config: Record<string, unknown>): number | null {
  const windowOf = (fallback: number | null): number | null =>
    config.sliding_window === undefined || config.sliding_window === null
      ? fallback
      : boundedInt(config, 'sliding_window', 1);
  switch (family) {
    case 'llama':
      return null;
    case 'mistral':
    case 'phi3':
      return windowOf(null);
    case 'gemma2':
      // Gemma2Config's default window (every other layer slides); null turns it off.
      return config.sliding_window === null ? null : windowOf(4096);
    case 'qwen2':
    case 'qwen3':
      return config.use_sliding_window === true ? windowOf(4096) : null;
  }
}

function isRotaryFamily(value: unknown): value is RotaryFamily {
  return typeof value === 'string' && Object.hasOwn(DECODER_CONFIG_DEFAULTS, value);
}

/** config.json is missing, unreadable, or describes an architecture lorafleet cannot train. */
export class ModelFactsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ModelFactsError';
  }
}

/** The longest default sequence: longer ones cost memory quadratically in attention. */
export const MAX_DEFAULT_SEQ_LENGTH = 1024;

/**
 * `max_seq_length` when a job or a run names none: min(1024, the model's context length).
 * The one place this default is computed; the API stores its result on the job.
 */
export function defaultMaxSeqLength(contextLength: number): number {
  return Math.min(MAX_DEFAULT_SEQ_LENGTH, contextLength);
}

/** `key`'s value (or `fallback`), within the range lora-core's parser also enforces. */
function boundedInt(json: Record<string, unknown>, key: string, fallback: number): number {
  const value = json[key] ?? fallback;
  const problem = configIntProblem(key, value);
  if (problem !== null) throw new ModelFactsError(problem);
  return value as number;
}

/** Facts from a decoded config.json (the same defaults as lora-core's config parser). */
export function modelFactsFromConfig(json: unknown): ModelFacts {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ModelFactsError('config.json must be a JSON object');
  }
  const config = json as Record<string, unknown>;
  // Every size the config declares, read here or not, is held to the range lora-core's parser
  // enforces, so a model the worker would refuse is a 400 at create rather than a failed job.
  for (const key of Object.keys(MODEL_CONFIG_INT_BOUNDS)) {
    if (config[key] !== undefined && config[key] !== null) boundedInt(config, key, 0);
  }
  const tied = (fallback: boolean) => {
    const value = config.tie_word_embeddings ?? fallback;
    return value === true;
  };
  let shape: TrainingMemoryShape;
  let contextLength: number;
  if (config.model_type === 'gpt2') {
    const hiddenSize = boundedInt(config, 'n_embd', 768);
    contextLength = boundedInt(config, 'n_positions', 1024);
    shape = {
      modelType: 'gpt2',
      vocabSize: boundedInt(config, 'vocab_size', 50257),
      hiddenSize,
      numLayers: boundedInt(config, 'n_layer', 12),
      maxPositions: contextLength,
      numHeads: boundedInt(config, 'n_head', 12),
      innerSize: boundedInt(config, 'n_inner', 4 * hiddenSize),
      tieWordEmbeddings: tied(true),
    };
  } else {
    const family = config.model_type;
    if (!isRotaryFamily(family)) {
      throw new ModelFactsError(
        `config.json: model_type ${JSON.stringify(family)} is not supported (supported: gpt2, ${Object.keys(DECODER_CONFIG_DEFAULTS).join(', ')})`,
      );
    }
    const d = DECODER_CONFIG_DEFAULTS[family];
    const positions = boundedInt(config, 'max_position_embeddings', d.maxPositions);
    const window = activeSlidingWindow(family, config);
    contextLength = window === null ? positions : Math.min(positions, window);
    const hiddenSize = boundedInt(config, 'hidden_size', d.hiddenSize);
    const numHeads = boundedInt(config, 'num_attention_heads', d.numHeads);
    // transformers: `getattr(config, "head_dim", None) or hidden_size // num_attention_heads`.
    const headDim = boundedInt(config, 'head_dim', d.headDim ?? hiddenSize / numHeads);
    shape = {
      modelType: family,
      vocabSize: boundedInt(config, 'vocab_size', d.vocabSize),
      hiddenSize,
      numLayers: boundedInt(config, 'num_hidden_layers', d.numLayers),
      numHeads,
      numKeyValueHeads: boundedInt(config, 'num_key_value_heads', d.numKeyValueHeads ?? numHeads),
      headDim,
      intermediateSize: boundedInt(config, 'intermediate_size', d.intermediateSize),
      // Gemma 2's head is tied unless the config says otherwise.
      tieWordEmbeddings: tied(family === 'gemma2'),
      ...decoderParameterFlags(family, config.attention_bias === true, config.mlp_bias === true),
      // Gemma 2 soft-caps its logits (30 unless the config says otherwise, null turns it off).
      finalLogitSoftcap:
        family !== 'gemma2'
          ? null
          : config.final_logit_softcapping === null
            ? null
            : typeof config.final_logit_softcapping === 'number'
              ? config.final_logit_softcapping
              : 30,
    };
  }
  const modulePaths = linearModuleTemplates(shape).map((t) => t.path);
  return {
    modelType: shape.modelType,
    contextLength,
    numLayers: shape.numLayers,
    parameters: countBaseParameters(shape),
    moduleNames: [...new Set(modulePaths.map((p) => p.slice(p.lastIndexOf('.') + 1)))],
    modulePaths,
    defaultLearningRate: DEFAULT_BASE_LEARNING_RATE,
    trainingShape: shape,
  };
}

/**
 * Facts of the model directory `dir`: `dir/config.json`, and the optional registry entry
 * {@link MODEL_REGISTRY_ENTRY_FILE} for the default learning rate.
 */
export function readModelFacts(dir: string): ModelFacts {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
  } catch {
    // The message names the file, not `dir`: it may reach a client, and paths are the server's.
    throw new ModelFactsError('config.json is missing or is not valid JSON');
  }
  const facts = modelFactsFromConfig(json);
  const entry = readRegistryEntry(dir);
  return entry?.default_learning_rate === undefined
    ? facts
    : { ...facts, defaultLearningRate: entry.default_learning_rate };
}

/** The registry entry beside config.json, or null when the model has none. */
function readRegistryEntry(dir: string): ModelRegistryEntry | null {
  const file = path.join(dir, MODEL_REGISTRY_ENTRY_FILE);
  if (!existsSync(file)) return null;
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    throw new ModelFactsError(`${MODEL_REGISTRY_ENTRY_FILE} is not valid JSON`);
  }
  const parsed = ModelRegistryEntrySchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ModelFactsError(
      `${MODEL_REGISTRY_ENTRY_FILE}: ${issue.path.join('.') || 'entry'}: ${issue.message}`,
    );
  }
  return parsed.data;
}

/** The entries of `targetModules` that select no linear module of the model. */
export function unknownTargetModules(facts: ModelFacts, targetModules: readonly string[]): string[] {
  return targetModules.filter(
    (entry) => !facts.modulePaths.some((t) => templateLayersMatched(t, facts.numLayers, entry) !== null),
  );
}
