import {
  ModelConfigError,
  countBaseParameters,
  countLoraTargets,
  countParameters,
  createRandomCausalLM,
  formatFixedLikePython,
  formatThousands,
  formatTrainableParameters,
  initBackend,
  loraTargetSpecs,
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

describe('config bounds and counts without per-layer structures (issue 14, item 17)', () => {
  it.each([
    [{ model_type: 'gpt2', n_layer: 10_000_000 }, 'n_layer'],
    [{ model_type: 'gpt2', n_embd: 2 ** 20, n_head: 1 }, 'n_embd'],
    [{ model_type: 'gpt2', n_positions: 1e9 }, 'n_positions'],
    [{ model_type: 'gpt2', n_inner: 1e12 }, 'n_inner'],
    [{ model_type: 'llama', num_hidden_layers: 1e6 }, 'num_hidden_layers'],
    [{ model_type: 'llama', vocab_size: 2 ** 30 }, 'vocab_size'],
    [{ model_type: 'llama', head_dim: 65_536 }, 'head_dim'],
    [{ model_type: 'llama', num_hidden_layers: 0 }, 'num_hidden_layers'],
    [
      {
        model_type: 'llama',
        rope_scaling: {
          rope_type: 'llama3',
          factor: 8,
          low_freq_factor: 1,
          high_freq_factor: 4,
          original_max_position_embeddings: 2 ** 40,
        },
      },
      'original_max_position_embeddings',
    ],
  ])('refuses %j naming %s', (json, key) => {
    let caught: unknown;
    try {
      parseModelConfig(json);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ModelConfigError);
    expect((caught as ModelConfigError).key).toBe(key);
    expect((caught as Error).message).toContain(`"${key}" must be an integer from 1 to`);
  });

  it('counts the largest accepted config by arithmetic, exactly and at once', () => {
    const config = parseModelConfig({
      model_type: 'llama',
      num_hidden_layers: 2048,
      hidden_size: 65_536,
      intermediate_size: 1_048_576,
      num_attention_heads: 4096,
      head_dim: 1024,
      vocab_size: 4_194_304,
    });
    const started = performance.now();
    const base = countBaseParameters(config);
    const targets = countLoraTargets(config, { r: 8, targetModules: 'all-linear' });
    expect(performance.now() - started).toBeLessThan(50);
    // Still an exact integer in a double: the bounds keep every count below 2^53.
    expect(Number.isSafeInteger(base + targets.parameters)).toBe(true);
    expect(targets.modules).toBe(2048 * 7);
    expect(formatThousands(base)).toMatch(/^\d{1,3}(,\d{3})+$/);
  });

  it('counts what loraTargetSpecs lists, for every kind of entry', () => {
    const configs = [
      GPT2,
      TINY_LLAMA,
      parseModelConfig({ model_type: 'gpt2', n_layer: 3, tie_word_embeddings: false }),
    ];
    const choices: Array<Pick<LoraConfig, 'targetModules' | 'excludeModules'>> = [
      { targetModules: 'all-linear' },
      { targetModules: 'all-linear', excludeModules: ['h.1.attn.c_attn', 'layers.0.mlp.up_proj'] },
      { targetModules: 'all-linear', excludeModules: ['c_proj', 'q_proj'] },
      { targetModules: ['c_attn', 'mlp.c_proj', 'q_proj', 'lm_head'] },
      {
        targetModules: [
          'h.2.attn.c_attn',
          'transformer.h.0.mlp.c_fc',
          '1.attn.c_proj',
          'h.99.attn.c_attn',
        ],
      },
      {
        targetModules: [
          'model.layers.21.self_attn.v_proj',
          '3.mlp.down_proj',
          'x.layers.0.mlp.up_proj',
        ],
      },
      { targetModules: ['c_attn', 'h.1.attn.c_attn'], excludeModules: ['h.1.attn.c_attn'] },
      { targetModules: ['nope', 'attn', ''] },
    ];
    for (const config of configs) {
      for (const choice of choices) {
        const listed = loraTargetSpecs(config, { ...lora(4, choice.targetModules), ...choice });
        expect(countLoraTargets(config, { r: 4, ...choice })).toEqual({
          modules: listed.length,
          parameters: listed.reduce((n, s) => n + 4 * (s.inFeatures + s.outFeatures), 0),
        });
      }
    }
  });

  it('prints huge counts as grouped integers, never in exponent notation', () => {
    expect(formatThousands(4.722366482869645e21)).toBe('4,722,366,482,869,645,213,696');
    expect(formatThousands(2n ** 80n)).toBe('1,208,925,819,614,629,174,706,176');
    expect(formatThousands(-1234567)).toBe('-1,234,567');
    expect(formatThousands(0)).toBe('0');
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
