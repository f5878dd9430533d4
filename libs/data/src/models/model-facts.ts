import { readFileSync } from 'node:fs';
import path from 'node:path';

import { MODEL_CONFIG_INT_BOUNDS, configIntProblem } from './model-config-bounds';

/**
 * What a job needs to know about a base model before it is queued, read from config.json
 * alone (no weights, no tfjs): the architecture, its context length and the names of the
 * linear modules LoRA can target. The API checks a job against these at create, so a bad
 * `max_seq_length` or `target_modules` is a 400 rather than a failed attempt in a worker.
 * The paths below mirror libs/lora-core's `linearModuleSpecs`, which builds the layers.
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
  /** Leaf names of the linear modules, e.g. `c_attn`, `q_proj`; `lm_head` when untied. */
  moduleNames: string[];
  /** Module path templates; `{i}` stands for the layer index (0 … numLayers − 1). */
  modulePaths: string[];
}

/** The architectures lorafleet trains (lora-core's `ModelType`). */
export type ModelFactsType = 'gpt2' | RotaryFamily;

/** The rotary decoder families: Llama's module names, or Phi-3's fused ones. */
type RotaryFamily = 'llama' | 'mistral' | 'qwen2' | 'qwen3' | 'phi3' | 'gemma2';

/** transformers' `max_position_embeddings` default per family (its `*Config` class). */
const ROTARY_DEFAULT_CONTEXT: Record<RotaryFamily, number> = {
  llama: 2048,
  mistral: 4096 * 32,
  qwen2: 32768,
  qwen3: 32768,
  phi3: 4096,
  gemma2: 8192,
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
  return typeof value === 'string' && value in ROTARY_DEFAULT_CONTEXT;
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
  let facts: Omit<ModelFacts, 'moduleNames'>;
  switch (config.model_type) {
    case 'gpt2':
      facts = {
        modelType: 'gpt2',
        contextLength: boundedInt(config, 'n_positions', 1024),
        numLayers: boundedInt(config, 'n_layer', 12),
        modulePaths: [
          'transformer.h.{i}.attn.c_attn',
          'transformer.h.{i}.attn.c_proj',
          'transformer.h.{i}.mlp.c_fc',
          'transformer.h.{i}.mlp.c_proj',
          ...(tied(true) ? [] : ['lm_head']),
        ],
      };
      break;
    default: {
      const family = config.model_type;
      if (!isRotaryFamily(family)) {
        throw new ModelFactsError(
          `config.json: model_type ${JSON.stringify(family)} is not supported (supported: gpt2, ${Object.keys(ROTARY_DEFAULT_CONTEXT).join(', ')})`,
        );
      }
      const positions = boundedInt(
        config,
        'max_position_embeddings',
        ROTARY_DEFAULT_CONTEXT[family],
      );
      const window = activeSlidingWindow(family, config);
      // Phi-3 fuses q/k/v into qkv_proj and gate/up into gate_up_proj (PEFT targets those names).
      const fused = family === 'phi3';
      facts = {
        modelType: family,
        contextLength: window === null ? positions : Math.min(positions, window),
        numLayers: boundedInt(config, 'num_hidden_layers', 32),
        modulePaths: [
          ...(fused
            ? ['model.layers.{i}.self_attn.qkv_proj']
            : [
                'model.layers.{i}.self_attn.q_proj',
                'model.layers.{i}.self_attn.k_proj',
                'model.layers.{i}.self_attn.v_proj',
              ]),
          'model.layers.{i}.self_attn.o_proj',
          ...(fused
            ? ['model.layers.{i}.mlp.gate_up_proj']
            : ['model.layers.{i}.mlp.gate_proj', 'model.layers.{i}.mlp.up_proj']),
          'model.layers.{i}.mlp.down_proj',
          // Gemma 2's head is tied unless the config says otherwise.
          ...(tied(family === 'gemma2') ? [] : ['lm_head']),
        ],
      };
      break;
    }
  }
  const moduleNames = [...new Set(facts.modulePaths.map((p) => p.slice(p.lastIndexOf('.') + 1)))];
  return { ...facts, moduleNames };
}

/** Facts of the model directory `dir` (reads `dir/config.json` only). */
export function readModelFacts(dir: string): ModelFacts {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
  } catch {
    // The message names the file, not `dir`: it may reach a client, and paths are the server's.
    throw new ModelFactsError('config.json is missing or is not valid JSON');
  }
  return modelFactsFromConfig(json);
}

/**
 * The modules of `template` that PEFT's rule (a module path equal to the entry, or ending in
 * `.<entry>`) selects for `entry`: `'all'` of them (every layer, or the one module of a
 * template without `{i}`), the one layer whose index the entry names, or none (null). Worked
 * out on the template, so a model with two thousand layers costs no more than one with two.
 * libs/lora-core counts LoRA parameters with it.
 */
export function templateLayersMatched(
  template: string,
  numLayers: number,
  entry: string,
): 'all' | number | null {
  const matches = (pathText: string) => pathText === entry || pathText.endsWith(`.${entry}`);
  if (!template.includes('.{i}.')) return matches(template) ? 'all' : null;
  const [prefix, suffix] = template.split('.{i}.');
  // Entries within the part after the index (`c_attn`, `attn.c_attn`) match every layer.
  if (matches(suffix)) return 'all';
  if (entry !== suffix && !entry.endsWith(`.${suffix}`)) return null;
  // The rest of the entry must end at a layer index: `3`, `h.3`, `transformer.h.3`.
  const head = entry === suffix ? '' : entry.slice(0, -(suffix.length + 1));
  const dot = head.lastIndexOf('.');
  const index = head.slice(dot + 1);
  const before = dot < 0 ? '' : head.slice(0, dot);
  if (!/^(0|[1-9]\d*)$/.test(index) || Number(index) >= numLayers) return null;
  return before === '' || prefix === before || prefix.endsWith(`.${before}`) ? Number(index) : null;
}

/** The entries of `targetModules` that select no linear module of the model. */
export function unknownTargetModules(facts: ModelFacts, targetModules: readonly string[]): string[] {
  return targetModules.filter(
    (entry) => !facts.modulePaths.some((t) => templateLayersMatched(t, facts.numLayers, entry) !== null),
  );
}
