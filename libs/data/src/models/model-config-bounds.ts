/**
 * Sane ranges for the integer sizes a config.json declares. A config file is a few hundred
 * bytes that decide how much everything downstream allocates (layers, embeddings, position
 * tables), so a crafted `"n_layer": 10000000` must be refused by name before anything is
 * sized from it. One table serves both parsers: libs/data's model facts (the API, no tfjs)
 * and libs/lora-core's `parseModelConfig` (the CLI and the trainer).
 *
 * Each maximum is several times the largest published causal LM (Llama 3.1 405B: 126 layers,
 * hidden 16384, intermediate 53248, 128 heads; Gemma: vocab 262144, head_dim 256; Llama 4
 * Scout: 10M positions), so no real model is refused, and with every size at its maximum a
 * parameter count still stays below 2^53 (exact in a double).
 */
export interface ConfigIntBounds {
  min: number;
  max: number;
}

const LAYERS: ConfigIntBounds = { min: 1, max: 2048 };
const HIDDEN: ConfigIntBounds = { min: 1, max: 65_536 };
const HEADS: ConfigIntBounds = { min: 1, max: 4096 };
const MLP: ConfigIntBounds = { min: 1, max: 1_048_576 };
const POSITIONS: ConfigIntBounds = { min: 1, max: 16_777_216 };

/** Keys are config.json's own names, so an error can name the field as the file spells it. */
export const MODEL_CONFIG_INT_BOUNDS: Readonly<Record<string, ConfigIntBounds>> = {
  vocab_size: { min: 1, max: 4_194_304 },
  // GPT-2
  n_embd: HIDDEN,
  n_head: HEADS,
  n_layer: LAYERS,
  n_positions: POSITIONS,
  n_inner: MLP,
  // Llama and its relatives
  hidden_size: HIDDEN,
  num_attention_heads: HEADS,
  num_key_value_heads: HEADS,
  num_hidden_layers: LAYERS,
  head_dim: { min: 1, max: 1024 },
  intermediate_size: MLP,
  max_position_embeddings: POSITIONS,
  original_max_position_embeddings: POSITIONS,
};

/**
 * The range for an integer key the table does not list: a new architecture's size field is
 * still bounded, generously, until it gets a row of its own.
 */
export const DEFAULT_CONFIG_INT_BOUNDS: ConfigIntBounds = { min: 1, max: POSITIONS.max };

/** The range `key` must fall in. */
export function configIntBounds(key: string): ConfigIntBounds {
  return Object.hasOwn(MODEL_CONFIG_INT_BOUNDS, key)
    ? MODEL_CONFIG_INT_BOUNDS[key]
    : DEFAULT_CONFIG_INT_BOUNDS;
}

/**
 * Why `value` is not an acceptable integer for `key`, as a message naming the field, or null
 * when it is one. Both parsers wrap the message in their own error class.
 */
export function configIntProblem(key: string, value: unknown): string | null {
  const { min, max } = configIntBounds(key);
  if (typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max) {
    return null;
  }
  return `config.json: "${key}" must be an integer from ${min} to ${max} (got ${JSON.stringify(value)})`;
}
