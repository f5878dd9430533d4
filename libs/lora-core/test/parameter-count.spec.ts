import {
  countParameters,
  createRandomCausalLM,
  formatFixedLikePython,
  formatTrainableParameters,
  initBackend,
  parseModelConfig,
  type LoraConfig,
} from '../src';

/** Published config.json of openai-community/gpt2. */
const GPT2 = parseModelConfig({
  activation_function: 'gelu_new',
  architectures: ['GPT2LMHeadModel'],
  model_type: 'gpt2',
  n_ctx: 1024,
  n_embd: 768,
  n_head: 12,
  n_layer: 12,
  n_positions: 1024,
  vocab_size: 50257,
});

/** Published config.json of TinyLlama/TinyLlama-1.1B-Chat-v1.0. */
const TINY_LLAMA = parseModelConfig({
  architectures: ['LlamaForCausalLM'],
  hidden_act: 'silu',
  hidden_size: 2048,
  intermediate_size: 5632,
  max_position_embeddings: 2048,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 22,
  num_key_value_heads: 4,
  rms_norm_eps: 1e-5,
  rope_scaling: null,
  rope_theta: 10000.0,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  vocab_size: 32000,
});

const lora = (r: number, targetModules: LoraConfig['targetModules']): LoraConfig => ({
  r,
  alpha: 2 * r,
  dropout: 0,
  targetModules,
  useRslora: false,
});

describe('parameter counting from config.json', () => {
  it('counts GPT-2 small exactly (124,439,808 parameters)', () => {
    expect(countParameters(GPT2)).toEqual({ trainable: 124439808, all: 124439808, percent: 100 });
  });

  it('prints GPT-2 + LoRA r=8 on c_attn as PEFT does', () => {
    expect(formatTrainableParameters(countParameters(GPT2, lora(8, ['c_attn'])))).toBe(
      'trainable params: 294,912 || all params: 124,734,720 || trainable%: 0.2364',
    );
  });

  it('counts TinyLlama exactly (1,100,048,384 parameters) and prints r=8 q_proj,v_proj as PEFT does', () => {
    expect(countParameters(TINY_LLAMA).all).toBe(1100048384);
    expect(
      formatTrainableParameters(countParameters(TINY_LLAMA, lora(8, ['q_proj', 'v_proj']))),
    ).toBe('trainable params: 1,126,400 || all params: 1,101,174,784 || trainable%: 0.1023');
  });

  it('all-linear skips lm_head; an explicit lm_head entry targets it', () => {
    const all = countParameters(TINY_LLAMA, lora(1, 'all-linear')).trainable;
    const perLayer = 2048 + 2048 + (2048 + 256) * 2 + 2048 + 2048 + (2048 + 5632) * 3;
    expect(all).toBe(22 * perLayer);
    expect(countParameters(TINY_LLAMA, lora(1, ['lm_head'])).trainable).toBe(2048 + 32000);
  });

  it('prints full fine-tuning as 100.0000%', () => {
    expect(formatTrainableParameters(countParameters(GPT2))).toBe(
      'trainable params: 124,439,808 || all params: 124,439,808 || trainable%: 100.0000',
    );
  });

  it('matches the parameters a built model actually allocates', async () => {
    await initBackend('cpu');
    for (const json of [
      { model_type: 'gpt2', vocab_size: 30, n_embd: 8, n_head: 2, n_layer: 2, n_positions: 8 },
      {
        model_type: 'gpt2',
        vocab_size: 30,
        n_embd: 8,
        n_head: 2,
        n_layer: 1,
        n_positions: 8,
        tie_word_embeddings: false,
      },
      {
        model_type: 'llama',
        vocab_size: 30,
        hidden_size: 8,
        intermediate_size: 12,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        num_hidden_layers: 2,
        attention_bias: true,
        tie_word_embeddings: true,
      },
    ]) {
      const config = parseModelConfig(json);
      const model = createRandomCausalLM(config, 0);
      const allocated = model.baseParameters().reduce((sum, p) => sum + p.tensor().size, 0);
      expect(countParameters(config).all).toBe(allocated);
      const cfg = lora(2, 'all-linear');
      model.addAdapter('a', cfg, 0);
      const trainable = model.trainableVariables().reduce((sum, v) => sum + v.size, 0);
      expect(countParameters(config, cfg).trainable).toBe(trainable);
      model.dispose();
    }
  });
});

describe('Python-compatible number formatting', () => {
  it.each([
    [0.03125, 4, '0.0312'], // exact binary tie: Python rounds half to even, toFixed would give 0.0313
    [0.09375, 4, '0.0938'],
    [2.5, 0, '2'],
    [3.5, 0, '4'],
    [0.1, 4, '0.1000'],
    [100, 4, '100.0000'],
    [0.23643222, 4, '0.2364'],
    [1.00005, 4, '1.0001'], // 1.00005 is slightly above the tie in binary
    [-1.5, 0, '-2'],
    [5e-324, 4, '0.0000'],
  ])('formats %p with %p digits as %p', (x, digits, expected) => {
    expect(formatFixedLikePython(x, digits)).toBe(expected);
  });
});
