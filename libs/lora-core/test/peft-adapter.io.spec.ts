import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import {
  PeftAdapterError,
  addLoraAdapter,
  createRandomCausalLM,
  exportPeftAdapter,
  importPeftAdapter,
  initBackend,
  loadPeftAdapter,
  parseModelConfig,
  readSafetensors,
  savePeftAdapter,
  writeSafetensors,
  type CausalLM,
  type SafetensorsInput,
} from '../src';
import { FIXTURES } from './fixture.helpers';

const gpt2Config = parseModelConfig({
  model_type: 'gpt2',
  vocab_size: 20,
  n_embd: 8,
  n_head: 2,
  n_layer: 2,
  n_positions: 8,
});
const llamaConfig = parseModelConfig({
  model_type: 'llama',
  vocab_size: 20,
  hidden_size: 8,
  intermediate_size: 12,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  num_hidden_layers: 1,
});

function keyOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(PeftAdapterError);
    return (error as PeftAdapterError).key;
  }
  throw new Error('expected a PeftAdapterError');
}

describe('PEFT adapter export', () => {
  let model: CausalLM;
  beforeAll(() => initBackend('cpu'));
  beforeEach(() => {
    model = createRandomCausalLM(gpt2Config, 1);
  });
  afterEach(() => model.dispose());

  it('writes PEFT keys, [r, in] / [out, r] shapes, fan_in_fan_out and format metadata (GPT-2)', () => {
    addLoraAdapter(
      model,
      'default',
      { r: 2, alpha: 4, dropout: 0.05, targetModules: ['c_attn'], useRslora: false },
      3,
    );
    const { adapterConfig, adapterSafetensors } = exportPeftAdapter(
      model,
      'default',
      'openai-community/gpt2',
    );
    expect(adapterConfig).toMatchObject({
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      r: 2,
      lora_alpha: 4,
      lora_dropout: 0.05,
      target_modules: ['c_attn'],
      fan_in_fan_out: true,
      bias: 'none',
      use_rslora: false,
      use_dora: false,
      base_model_name_or_path: 'openai-community/gpt2',
    });
    const file = readSafetensors(adapterSafetensors);
    expect(file.metadata).toEqual({ format: 'pt' });
    expect([...file.tensors.keys()].sort()).toEqual([
      'base_model.model.transformer.h.0.attn.c_attn.lora_A.weight',
      'base_model.model.transformer.h.0.attn.c_attn.lora_B.weight',
      'base_model.model.transformer.h.1.attn.c_attn.lora_A.weight',
      'base_model.model.transformer.h.1.attn.c_attn.lora_B.weight',
    ]);
    expect(
      file.tensors.get('base_model.model.transformer.h.0.attn.c_attn.lora_A.weight')!.shape,
    ).toEqual([2, 8]);
    expect(
      file.tensors.get('base_model.model.transformer.h.0.attn.c_attn.lora_B.weight')!.shape,
    ).toEqual([24, 2]);
  });

  it('transposes: lora_A.weight is Aᵀ of the tfjs [in, r] kernel', () => {
    addLoraAdapter(
      model,
      'default',
      { r: 2, alpha: 4, dropout: 0, targetModules: ['c_fc'], useRslora: false },
      3,
    );
    const ours = model.adapterWeights('default').get('transformer.h.0.mlp.c_fc')!;
    const file = readSafetensors(exportPeftAdapter(model, 'default', 'x').adapterSafetensors);
    const peftA = file.tensors.get('base_model.model.transformer.h.0.mlp.c_fc.lora_A.weight')!.data; // [r, in]
    for (let i = 0; i < 8; i++)
      for (let k = 0; k < 2; k++) expect(peftA[k * 8 + i]).toBe(ours.a[i * 2 + k]);
  });

  it('resolves all-linear to module names and uses model.layers paths (Llama)', async () => {
    const llama = createRandomCausalLM(llamaConfig, 2);
    try {
      addLoraAdapter(
        llama,
        'default',
        { r: 2, alpha: 2, dropout: 0, targetModules: 'all-linear', useRslora: true },
        1,
      );
      const exported = exportPeftAdapter(llama, 'default', 'tiny');
      expect(exported.adapterConfig.target_modules).toEqual([
        'down_proj',
        'gate_proj',
        'k_proj',
        'o_proj',
        'q_proj',
        'up_proj',
        'v_proj',
      ]);
      expect(exported.adapterConfig.fan_in_fan_out).toBe(false);
      const keys = [...readSafetensors(exported.adapterSafetensors).tensors.keys()];
      expect(keys).toContain('base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight');
      expect(keys.some((k) => k.includes('lm_head'))).toBe(false);

      const dir = await mkdtemp(join(tmpdir(), 'peft-'));
      try {
        await savePeftAdapter(dir, exported);
        expect(JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8'))).toEqual(
          exported.adapterConfig,
        );
        const reloaded = createRandomCausalLM(llamaConfig, 2);
        await loadPeftAdapter(reloaded, 'x', dir);
        expect(reloaded.loraConfig('x').targetModules).toHaveLength(7);
        reloaded.dispose();
      } finally {
        await rm(dir, { recursive: true });
      }
    } finally {
      llama.dispose();
    }
  });
});

describe('PEFT adapter import validation', () => {
  let model: CausalLM;
  const fixtureConfig = JSON.parse(
    readFileSync(join(FIXTURES, 'gpt2-tiny-adapter', 'adapter_config.json'), 'utf8'),
  ) as Record<string, unknown>;
  const fixtureWeights = readFileSync(
    join(FIXTURES, 'gpt2-tiny-adapter', 'adapter_model.safetensors'),
  );
  const fixtureModelConfig = parseModelConfig(
    JSON.parse(readFileSync(join(FIXTURES, 'gpt2-tiny', 'config.json'), 'utf8')),
  );

  beforeAll(() => initBackend('cpu'));
  beforeEach(() => {
    model = createRandomCausalLM(fixtureModelConfig, 1);
  });
  afterEach(() => model.dispose());

  const importWith = (patch: Record<string, unknown>, weights: Uint8Array = fixtureWeights) =>
    importPeftAdapter(model, 'x', { ...fixtureConfig, ...patch }, weights);

  it('imports a PEFT adapter and ignores unknown config keys', () => {
    expect(fixtureConfig.some_future_peft_key).toBeDefined();
    const cfg = importWith({});
    expect(cfg).toMatchObject({
      r: 4,
      alpha: 8,
      useRslora: false,
      targetModules: ['c_attn', 'c_proj', 'c_fc'],
    });
  });

  it.each([
    ['use_dora', true],
    ['rank_pattern', { c_attn: 8 }],
    ['alpha_pattern', { c_attn: 16 }],
    ['layers_to_transform', [0]],
    ['modules_to_save', ['lm_head']],
    ['layer_replication', [[0, 1]]],
    ['lora_bias', true],
    ['trainable_token_indices', [1, 2]],
    ['bias', 'all'],
    ['bias', 'lora_only'],
    ['target_modules', '.*attn.*'],
    ['exclude_modules', '.*h\\.0.*'],
    ['init_lora_weights', 'pissa'],
    ['init_lora_weights', 'olora'],
    ['init_lora_weights', 'loftq'],
    ['peft_type', 'IA3'],
    ['task_type', 'SEQ_CLS'],
    ['r', 0],
  ])('rejects %s = %j with an error naming the key', (key, value) => {
    expect(keyOf(() => importWith({ [key]: value }))).toBe(key);
  });

  it('accepts features that are present but unset, as PEFT writes them', () => {
    expect(() =>
      importWith({
        use_dora: false,
        rank_pattern: {},
        alpha_pattern: {},
        layers_to_transform: null,
        layers_pattern: null,
        modules_to_save: null,
        init_lora_weights: true,
        megatron_config: null,
        loftq_config: {},
      }),
    ).not.toThrow();
  });

  it('uses PEFT defaults when target_modules is null', () => {
    const tensors = readSafetensors(fixtureWeights).tensors;
    const onlyAttn: Record<string, SafetensorsInput> = {};
    for (const [k, t] of tensors) if (k.includes('c_attn')) onlyAttn[k] = t;
    expect(importWith({ target_modules: null }, writeSafetensors(onlyAttn)).targetModules).toEqual([
      'c_attn',
    ]);
  });

  it('implements exclude_modules given as a list', () => {
    const tensors = readSafetensors(fixtureWeights).tensors;
    const kept: Record<string, SafetensorsInput> = {};
    for (const [k, t] of tensors) if (!k.includes('mlp.c_proj')) kept[k] = t;
    const cfg = importWith({ exclude_modules: ['mlp.c_proj'] }, writeSafetensors(kept));
    expect(model.resolveTargets(cfg).map((l) => l.path)).not.toContain(
      'transformer.h.0.mlp.c_proj',
    );
  });

  it('names a tensor the loader does not support', () => {
    const tensors = Object.fromEntries(readSafetensors(fixtureWeights).tensors);
    const key = 'base_model.model.transformer.h.0.attn.c_attn.lora_magnitude_vector';
    tensors[key] = { dtype: 'F32', shape: [96], data: new Float32Array(96) };
    expect(keyOf(() => importWith({}, writeSafetensors(tensors)))).toBe(key);
  });

  it('names a tensor with the wrong shape', () => {
    const tensors = Object.fromEntries(readSafetensors(fixtureWeights).tensors);
    const key = 'base_model.model.transformer.h.1.mlp.c_fc.lora_B.weight';
    tensors[key] = { dtype: 'F32', shape: [128, 3], data: new Float32Array(384) };
    expect(keyOf(() => importWith({}, writeSafetensors(tensors)))).toBe(key);
  });

  it('names a missing tensor of a targeted module', () => {
    const tensors = Object.fromEntries(readSafetensors(fixtureWeights).tensors);
    const key = 'base_model.model.transformer.h.1.mlp.c_fc.lora_A.weight';
    delete tensors[key];
    expect(keyOf(() => importWith({}, writeSafetensors(tensors)))).toBe(key);
  });

  it('names a tensor for a module target_modules does not select', () => {
    const key = 'base_model.model.transformer.h.0.attn.c_proj.lora_A.weight';
    expect(keyOf(() => importWith({ target_modules: ['c_attn', 'c_fc'] }))).toBe(key);
  });

  it('accepts keys saved from a bare GPT2Model (no transformer. prefix)', () => {
    const renamed: Record<string, SafetensorsInput> = {};
    for (const [k, t] of readSafetensors(fixtureWeights).tensors)
      renamed[k.replace('model.transformer.', 'model.')] = t;
    expect(() => importWith({}, writeSafetensors(renamed))).not.toThrow();
  });

  it.each([NaN, Infinity, -Infinity])(
    'refuses a tensor holding %p, naming it (issue 14, item 18)',
    (value) => {
      const tensors = Object.fromEntries(readSafetensors(fixtureWeights).tensors);
      const key = 'base_model.model.transformer.h.1.mlp.c_fc.lora_B.weight';
      const data = new Float32Array(tensors[key].data);
      data[5] = value;
      tensors[key] = { ...tensors[key], data };
      let caught: unknown;
      try {
        importWith({}, writeSafetensors(tensors));
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(PeftAdapterError);
      expect((caught as PeftAdapterError).key).toBe(key);
      expect((caught as Error).message).toMatch(/non-finite value .* at flat index 5/);
      expect(model.adapterNames()).toEqual([]);
    },
  );

  it('refuses a lora_alpha whose scaling, or scaled update, is beyond float32', () => {
    // 1e308 / r is finite in a double but infinite in float32, where tfjs multiplies.
    expect(keyOf(() => importWith({ lora_alpha: 1e308 }))).toBe('lora_alpha');
    expect(keyOf(() => importWith({ lora_alpha: 1e308, use_rslora: true }))).toBe('lora_alpha');
    // A scaling float32 can hold (2.5e37), times these weights, can still overflow.
    const tensors = Object.fromEntries(readSafetensors(fixtureWeights).tensors);
    const key = 'base_model.model.transformer.h.1.attn.c_attn.lora_B.weight';
    const large = new Float32Array(tensors[key].data);
    large[0] = 100;
    const withLarge = writeSafetensors({ ...tensors, [key]: { ...tensors[key], data: large } });
    expect(() => importWith({ lora_alpha: 1e38 })).not.toThrow();
    model.deleteAdapter('x');
    expect(keyOf(() => importWith({ lora_alpha: 1e38 }, withLarge))).toBe('lora_alpha');
    // An all-zero B never overflows, whatever the scaling (a freshly initialised adapter).
    for (const key of Object.keys(tensors)) {
      if (key.includes('lora_B'))
        tensors[key] = { ...tensors[key], data: new Float32Array(tensors[key].data.length) };
    }
    expect(() => importWith({ lora_alpha: 1e38 }, writeSafetensors(tensors))).not.toThrow();
  });

  it('leaves the model untouched when an import fails', () => {
    expect(() => importWith({ use_dora: true })).toThrow(PeftAdapterError);
    expect(model.adapterNames()).toEqual([]);
  });
});
