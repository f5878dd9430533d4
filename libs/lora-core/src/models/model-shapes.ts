/**
 * Named shapes of real base models (issue 13), as the Hugging Face `config.json` objects of
 * the public checkpoints they copy, with the LoRA and batch settings the benchmark and the
 * acceptance runs use. Only the shapes: `writeRandomModelDir` fills them with random
 * weights, so nothing is ever downloaded.
 */

/** Sequence length every shape is trained at (issue 13). */
export const MODEL_SHAPE_SEQ_LENGTH = 256;

export interface ModelShape {
  /** The public checkpoint whose `config.json` this copies. */
  reference: string;
  /** Hugging Face `config.json`, as `parseModelConfig` reads it. */
  config: Record<string, unknown>;
  /** Weight dtype of the reference checkpoint's safetensors. */
  dtype: 'F32' | 'BF16';
  /** LoRA rank and targets (PEFT's defaults for the architecture). */
  lora: { r: number; targetModules: string[] };
  /** Examples per step in the benchmark and the acceptance runs. */
  batchSize: number;
  seqLength: number;
}

export const MODEL_SHAPE_NAMES = ['gpt2-small', 'smollm2-135m', 'llama-0.5b', 'llama-1b'] as const;
export type ModelShapeName = (typeof MODEL_SHAPE_NAMES)[number];

const LLAMA_LORA = { r: 8, targetModules: ['q_proj', 'v_proj'] };

export const MODEL_SHAPES: Readonly<Record<ModelShapeName, ModelShape>> = {
  // 124M parameters; the hub's safetensors are f32.
  'gpt2-small': {
    reference: 'openai-community/gpt2',
    config: {
      architectures: ['GPT2LMHeadModel'],
      model_type: 'gpt2',
      vocab_size: 50257,
      n_positions: 1024,
      n_embd: 768,
      n_layer: 12,
      n_head: 12,
      n_inner: null,
      activation_function: 'gelu_new',
      layer_norm_epsilon: 1e-5,
      initializer_range: 0.02,
      bos_token_id: 50256,
      eos_token_id: 50256,
      tie_word_embeddings: true,
      torch_dtype: 'float32',
    },
    dtype: 'F32',
    lora: { r: 8, targetModules: ['c_attn'] },
    batchSize: 4,
    seqLength: MODEL_SHAPE_SEQ_LENGTH,
  },
  // 135M parameters: Llama with GQA (9 heads, 3 KV heads of 64), tied head, bf16 weights.
  'smollm2-135m': {
    reference: 'HuggingFaceTB/SmolLM2-135M',
    config: {
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      vocab_size: 49152,
      hidden_size: 576,
      intermediate_size: 1536,
      num_hidden_layers: 30,
      num_attention_heads: 9,
      num_key_value_heads: 3,
      head_dim: 64,
      hidden_act: 'silu',
      max_position_embeddings: 8192,
      rms_norm_eps: 1e-5,
      rope_theta: 100000,
      rope_scaling: null,
      attention_bias: false,
      mlp_bias: false,
      initializer_range: 0.041666666666666664,
      tie_word_embeddings: true,
      bos_token_id: 0,
      eos_token_id: 0,
      torch_dtype: 'bfloat16',
    },
    dtype: 'BF16',
    lora: LLAMA_LORA,
    batchSize: 4,
    seqLength: MODEL_SHAPE_SEQ_LENGTH,
  },
  // 494M parameters, Qwen2.5-0.5B's sizes (bf16 on the hub) written as a Llama: Qwen2's
  // q/k/v biases are left out (`attention_bias` would put them on o_proj too).
  'llama-0.5b': {
    reference: 'Qwen/Qwen2.5-0.5B (sizes only, as Llama)',
    config: {
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      vocab_size: 151936,
      hidden_size: 896,
      intermediate_size: 4864,
      num_hidden_layers: 24,
      num_attention_heads: 14,
      num_key_value_heads: 2,
      head_dim: 64,
      hidden_act: 'silu',
      max_position_embeddings: 32768,
      rms_norm_eps: 1e-6,
      rope_theta: 1000000,
      rope_scaling: null,
      attention_bias: false,
      mlp_bias: false,
      initializer_range: 0.02,
      tie_word_embeddings: true,
      bos_token_id: 151643,
      eos_token_id: 151643,
      torch_dtype: 'bfloat16',
    },
    dtype: 'BF16',
    lora: LLAMA_LORA,
    batchSize: 2,
    seqLength: MODEL_SHAPE_SEQ_LENGTH,
  },
  // 1.24B parameters, Llama-3.2-1B (bf16 on the hub, llama3 RoPE scaling, tied head).
  'llama-1b': {
    reference: 'meta-llama/Llama-3.2-1B',
    config: {
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      vocab_size: 128256,
      hidden_size: 2048,
      intermediate_size: 8192,
      num_hidden_layers: 16,
      num_attention_heads: 32,
      num_key_value_heads: 8,
      head_dim: 64,
      hidden_act: 'silu',
      max_position_embeddings: 131072,
      rms_norm_eps: 1e-5,
      rope_theta: 500000,
      rope_scaling: {
        factor: 32,
        high_freq_factor: 4,
        low_freq_factor: 1,
        original_max_position_embeddings: 8192,
        rope_type: 'llama3',
      },
      attention_bias: false,
      mlp_bias: false,
      initializer_range: 0.02,
      tie_word_embeddings: true,
      bos_token_id: 128000,
      eos_token_id: 128001,
      torch_dtype: 'bfloat16',
    },
    dtype: 'BF16',
    lora: LLAMA_LORA,
    batchSize: 1,
    seqLength: MODEL_SHAPE_SEQ_LENGTH,
  },
};

export function isModelShapeName(name: string): name is ModelShapeName {
  return (MODEL_SHAPE_NAMES as readonly string[]).includes(name);
}

/** The shape called `name`; throws naming the known shapes otherwise. */
export function modelShape(name: string): ModelShape {
  if (!isModelShapeName(name)) {
    throw new Error(`unknown model shape "${name}" (known: ${MODEL_SHAPE_NAMES.join(', ')})`);
  }
  return MODEL_SHAPES[name];
}
