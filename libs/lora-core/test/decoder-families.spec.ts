/**
 * The rotary decoder families of issue 16 (Qwen2, Qwen3, Mistral, Phi-3) beyond the logits
 * parity of parity.spec.ts: their config mappings and refusals, PEFT's default targets and
 * all-linear, parameter counts from config.json alone, foreign PEFT adapters changing the
 * logits exactly as W + (α/r)·B·A, merge and export round trips, KV-cache decoding and
 * gradient checkpointing through the shared block.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';

import {
  KvCacheDecoder,
  contextLength,
  LoraConfigError,
  ModelConfigError,
  buildCausalLM,
  causalLmLoss,
  countBaseParameters,
  countParameters,
  createRandomCausalLM,
  defaultTargetModules,
  estimateTrainingMemory,
  exportPeftAdapter,
  formatTrainableParameters,
  importPeftAdapter,
  initBackend,
  linearModuleSpecs,
  loadCausalLM,
  loadPeftAdapter,
  parseModelConfig,
  readSafetensors,
  runFineTune,
  saveHfModel,
  shiftTargets,
  type CausalLM,
  type DecoderConfig,
  type LoraConfig,
  type WeightSource,
} from '../src';
import { resolveFineTuneSpec } from '@lorafleet/data';

import { FIXTURES, maxAbsDiff, readInputs } from './fixture.helpers';
import { pairsJsonl, tinyTokenizer } from './trainer.helpers';

const FAMILIES = ['qwen2-tiny', 'qwen3-tiny', 'mistral-tiny', 'phi3-tiny', 'gemma2-tiny'] as const;

/** Published config.json of Qwen/Qwen2.5-0.5B. */
const QWEN25_05B = {
  architectures: ['Qwen2ForCausalLM'],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151643,
  hidden_act: 'silu',
  hidden_size: 896,
  initializer_range: 0.02,
  intermediate_size: 4864,
  max_position_embeddings: 32768,
  max_window_layers: 24,
  model_type: 'qwen2',
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

/** Published config.json of microsoft/Phi-3-mini-4k-instruct. */
const PHI3_MINI = {
  architectures: ['Phi3ForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 1,
  embd_pdrop: 0.0,
  eos_token_id: 32000,
  hidden_act: 'silu',
  hidden_size: 3072,
  initializer_range: 0.02,
  intermediate_size: 8192,
  max_position_embeddings: 4096,
  model_type: 'phi3',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 32,
  original_max_position_embeddings: 4096,
  pad_token_id: 32000,
  resid_pdrop: 0.0,
  rms_norm_eps: 1e-5,
  rope_scaling: null,
  rope_theta: 10000.0,
  sliding_window: 2047,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  vocab_size: 32064,
};

/** Published config.json of mistralai/Mistral-7B-v0.1. */
const MISTRAL_7B = {
  architectures: ['MistralForCausalLM'],
  hidden_act: 'silu',
  hidden_size: 4096,
  intermediate_size: 14336,
  max_position_embeddings: 32768,
  model_type: 'mistral',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  sliding_window: 4096,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  vocab_size: 32000,
};

/** Published config.json of Qwen/Qwen3-0.6B (head_dim 128 ≠ 1024/16). */
const QWEN3_06B = {
  architectures: ['Qwen3ForCausalLM'],
  attention_bias: false,
  head_dim: 128,
  hidden_act: 'silu',
  hidden_size: 1024,
  intermediate_size: 3072,
  max_position_embeddings: 40960,
  max_window_layers: 28,
  model_type: 'qwen3',
  num_attention_heads: 16,
  num_hidden_layers: 28,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 1000000,
  sliding_window: null,
  tie_word_embeddings: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

/** Published config.json of google/gemma-2-2b. */
const GEMMA2_2B = {
  architectures: ['Gemma2ForCausalLM'],
  attention_bias: false,
  attn_logit_softcapping: 50.0,
  cache_implementation: 'hybrid',
  final_logit_softcapping: 30.0,
  head_dim: 256,
  hidden_act: 'gelu_pytorch_tanh',
  hidden_activation: 'gelu_pytorch_tanh',
  hidden_size: 2304,
  intermediate_size: 9216,
  max_position_embeddings: 8192,
  model_type: 'gemma2',
  num_attention_heads: 8,
  num_hidden_layers: 26,
  num_key_value_heads: 4,
  query_pre_attn_scalar: 256,
  rms_norm_eps: 1e-6,
  rope_theta: 10000.0,
  sliding_window: 4096,
  vocab_size: 256000,
};

const lora = (r: number, targetModules: LoraConfig['targetModules']): LoraConfig => ({
  r,
  alpha: 2 * r,
  dropout: 0,
  targetModules,
  useRslora: false,
});

function configOf(name: string): DecoderConfig {
  const json: unknown = JSON.parse(readFileSync(join(FIXTURES, name, 'config.json'), 'utf8'));
  return parseModelConfig(json) as DecoderConfig;
}

function logitsOf(model: CausalLM, ids: number[][]): Float32Array {
  return tf.tidy(
    () => model.forward(tf.tensor2d(ids, undefined, 'int32')).dataSync() as Float32Array,
  );
}

beforeAll(async () => {
  await initBackend('cpu');
});

describe('family config mappings', () => {
  it('maps each family onto the decoder options', () => {
    const qwen2 = parseModelConfig(QWEN25_05B) as DecoderConfig;
    expect(qwen2).toMatchObject({
      modelType: 'qwen2',
      headDim: 64,
      qkvBias: true,
      oProjBias: false,
      qkNorm: false,
      fusedProjections: false,
      tieWordEmbeddings: true,
      slidingWindow: null, // use_sliding_window: false
    });
    expect(parseModelConfig(QWEN3_06B)).toMatchObject({
      modelType: 'qwen3',
      headDim: 128,
      qkvBias: false,
      qkNorm: true,
      slidingWindow: null,
    });
    expect(parseModelConfig(MISTRAL_7B)).toMatchObject({
      modelType: 'mistral',
      headDim: 128,
      numKeyValueHeads: 8,
      qkvBias: false,
      slidingWindow: 4096,
    });
    expect(parseModelConfig(GEMMA2_2B)).toMatchObject({
      modelType: 'gemma2',
      headDim: 256,
      tieWordEmbeddings: true,
      normOffset: 1,
      embeddingScale: Math.fround(48),
      mlpActivation: 'gelu_tanh',
      sandwichNorms: true,
      attentionScale: 1 / 16,
      attnLogitSoftcap: 50,
      finalLogitSoftcap: 30,
      slidingWindow: 4096,
    });
    expect(parseModelConfig(PHI3_MINI)).toMatchObject({
      modelType: 'phi3',
      headDim: 96,
      fusedProjections: true,
      slidingWindow: 2047,
    });
  });

  it('refuses what is not implemented, naming the key', () => {
    const refusal = (json: Record<string, unknown>): ModelConfigError => {
      try {
        parseModelConfig(json);
      } catch (error) {
        return error as ModelConfigError;
      }
      throw new Error('expected a ModelConfigError');
    };
    const longrope = refusal({
      ...PHI3_MINI,
      rope_scaling: { type: 'longrope', short_factor: [1], long_factor: [1] },
    });
    expect(longrope).toBeInstanceOf(ModelConfigError);
    expect(longrope.key).toBe('rope_scaling.rope_type');
    expect(longrope.message).toMatch(/longrope/);
    expect(refusal({ ...PHI3_MINI, partial_rotary_factor: 0.75 }).key).toBe(
      'partial_rotary_factor',
    );
    expect(refusal({ ...MISTRAL_7B, hidden_act: 'gelu' }).key).toBe('hidden_act');
    expect(refusal({ ...GEMMA2_2B, hidden_activation: 'gelu' }).key).toBe('hidden_activation');
    expect(refusal({ ...MISTRAL_7B, model_type: 'gemma3' }).message).toMatch(
      /supported: gpt2, llama, mistral, qwen2, qwen3, phi3, gemma2/,
    );
  });

  it('is exact up to the sliding window and refuses a longer sequence (forward and decoding)', () => {
    const config = parseModelConfig({
      ...configOf('qwen2-tiny').raw,
      use_sliding_window: true,
      sliding_window: 4,
    });
    const model = createRandomCausalLM(config, 7);
    try {
      expect(() => logitsOf(model, [[1, 2, 3, 4]])).not.toThrow();
      let error: unknown;
      try {
        logitsOf(model, [[1, 2, 3, 4, 5]]);
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(ModelConfigError);
      expect((error as ModelConfigError).key).toBe('sliding_window');
      const decoder = new KvCacheDecoder(model, null);
      decoder.step([1, 2, 3, 4]).dispose();
      expect(() => decoder.step([5])).toThrow(/sliding_window 4/);
      decoder.dispose();
    } finally {
      model.dispose();
    }
  });
});

describe('LoRA targets and parameter counts from config.json alone', () => {
  it("uses PEFT's default target_modules, and qkv_proj for phi3 (PEFT has none)", () => {
    expect(defaultTargetModules('qwen2')).toEqual(['q_proj', 'v_proj']);
    expect(defaultTargetModules('qwen3')).toEqual(['q_proj', 'v_proj']);
    expect(defaultTargetModules('mistral')).toEqual(['q_proj', 'v_proj']);
    expect(defaultTargetModules('phi3')).toEqual(['qkv_proj']);
    expect(defaultTargetModules('gemma2')).toEqual(['q_proj', 'v_proj']);
  });

  it('counts Qwen2.5-0.5B with r=8 on the default targets as PEFT prints it', () => {
    const config = parseModelConfig(QWEN25_05B);
    const line = formatTrainableParameters(
      countParameters(config, lora(8, defaultTargetModules('qwen2'))),
    );
    expect(line).toMatch(/^trainable params: 540,672 \|\| all params: 494,573,440 \|\| /);
  });

  it('counts Phi-3-mini with r=8 on qkv_proj as PEFT prints it', () => {
    const line = formatTrainableParameters(
      countParameters(parseModelConfig(PHI3_MINI), lora(8, ['qkv_proj'])),
    );
    expect(line).toMatch(/^trainable params: 3,145,728 \|\| all params: 3,824,225,280 \|\| /);
  });

  it('counts Gemma-2-2B (sandwich norms, tied head) as its model card gives it', () => {
    expect(countBaseParameters(parseModelConfig(GEMMA2_2B))).toBe(2614341888);
  });

  it('counts Mistral-7B and Qwen3-0.6B as their model cards give them', () => {
    // 7,241,732,096 (Mistral-7B-v0.1); Qwen3-0.6B: 0.44B non-embedding + 151936·1024 tied.
    expect(countBaseParameters(parseModelConfig(MISTRAL_7B))).toBe(7241732096);
    const qwen3 = parseModelConfig(QWEN3_06B);
    expect(countBaseParameters(qwen3)).toBe(596049920);
    expect(countBaseParameters(qwen3) - 151936 * 1024).toBe(440467456);
  });

  it.each(FAMILIES)('%s: the count equals the tensors a built model allocates', (name) => {
    const config = configOf(name);
    const model = createRandomCausalLM(config, 3);
    try {
      const allocated = model
        .baseParameters()
        .reduce((sum, p) => sum + p.hfShape.reduce((a, b) => a * b, 1), 0);
      expect(countBaseParameters(config)).toBe(allocated);
      expect(model.linearLayers().map((l) => l.path)).toEqual(
        linearModuleSpecs(config).map((s) => s.path),
      );
    } finally {
      model.dispose();
    }
  });

  it('resolves all-linear to the fused names on phi3 and excludes lm_head', () => {
    const model = createRandomCausalLM(configOf('phi3-tiny'), 3);
    try {
      model.addAdapter('all', lora(2, 'all-linear'), 1);
      expect(model.loraConfig('all').targetModules).toEqual([
        'down_proj',
        'gate_up_proj',
        'o_proj',
        'qkv_proj',
      ]);
      expect(() => model.addAdapter('bad', lora(2, ['q_proj']), 1)).toThrow(LoraConfigError);
    } finally {
      model.dispose();
    }
  });
});

/**
 * W + scaling·B·A in Hugging Face layout ([out, in] = [out, r]·[r, in]), computed here from
 * the adapter file by plain loops: the reference a loaded adapter must reproduce.
 */
function mergedWeightSource(name: string): WeightSource {
  const base = readSafetensors(readFileSync(join(FIXTURES, name, 'model.safetensors'))).tensors;
  const adapterDir = join(FIXTURES, `${name}-adapter`);
  const adapterCfg = JSON.parse(readFileSync(join(adapterDir, 'adapter_config.json'), 'utf8')) as {
    r: number;
    lora_alpha: number;
    use_rslora: boolean;
  };
  const scaling = adapterCfg.use_rslora
    ? adapterCfg.lora_alpha / Math.sqrt(adapterCfg.r)
    : adapterCfg.lora_alpha / adapterCfg.r;
  const adapter = readSafetensors(
    readFileSync(join(adapterDir, 'adapter_model.safetensors')),
  ).tensors;
  return {
    read(key) {
      const tensor = base.get(key)!;
      const path = key.replace(/\.weight$/, '');
      const a = adapter.get(`base_model.model.${path}.lora_A.weight`); // [r, in]
      const b = adapter.get(`base_model.model.${path}.lora_B.weight`); // [out, r]
      if (!a || !b) return tensor.data;
      const [out, inF] = tensor.shape;
      const r = a.shape[0];
      const merged = new Float32Array(tensor.data);
      for (let o = 0; o < out; o++) {
        for (let i = 0; i < inF; i++) {
          let sum = 0;
          for (let k = 0; k < r; k++) sum += b.data[o * r + k] * a.data[k * inF + i];
          merged[o * inF + i] += scaling * sum;
        }
      }
      return merged;
    },
  };
}

describe.each(['qwen2-tiny', 'phi3-tiny'])('a foreign PEFT adapter on %s', (name) => {
  it('changes the logits exactly as W + (α/r)·B·A, merged or not, and survives a merged export', async () => {
    const ids = readInputs(name).input_ids;
    const config = configOf(name);
    const reference = buildCausalLM(config, mergedWeightSource(name));
    const expected = logitsOf(reference, ids);
    reference.dispose();

    const model = await loadCausalLM(join(FIXTURES, name));
    const dir = await mkdtemp(join(tmpdir(), 'lorafleet-family-'));
    try {
      const base = logitsOf(model, ids);
      await loadPeftAdapter(model, 'foreign', join(FIXTURES, `${name}-adapter`));
      const withAdapter = logitsOf(model, ids);
      expect(maxAbsDiff(base, expected)).toBeGreaterThan(1e-2); // the adapter does something
      expect(maxAbsDiff(withAdapter, expected)).toBeLessThanOrEqual(1e-4);
      model.mergeAdapter();
      expect(maxAbsDiff(logitsOf(model, ids), expected)).toBeLessThanOrEqual(1e-4);
      await saveHfModel(model, dir);
      const reloaded = await loadCausalLM(dir);
      expect(maxAbsDiff(logitsOf(reloaded, ids), expected)).toBeLessThanOrEqual(1e-4);
      reloaded.dispose();
      model.unmergeAdapter();
      expect(maxAbsDiff(logitsOf(model, ids), withAdapter)).toBeLessThanOrEqual(1e-4);
    } finally {
      model.dispose();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe.each(FAMILIES)('%s', (name) => {
  it('exports its adapter under the family module paths and re-imports it bit-exactly', async () => {
    const model = await loadCausalLM(join(FIXTURES, name));
    try {
      await loadPeftAdapter(model, 'ref', join(FIXTURES, `${name}-adapter`));
      const exported = exportPeftAdapter(model, 'ref', name);
      const keys = [...readSafetensors(exported.adapterSafetensors).tensors.keys()];
      const original = readSafetensors(
        readFileSync(join(FIXTURES, `${name}-adapter`, 'adapter_model.safetensors')),
      ).tensors;
      expect(keys.sort()).toEqual([...original.keys()].sort());
      for (const [key, tensor] of readSafetensors(exported.adapterSafetensors).tensors) {
        expect(
          Buffer.from(tensor.data.buffer).equals(Buffer.from(original.get(key)!.data.buffer)),
        ).toBe(true);
      }
      const copy = await loadCausalLM(join(FIXTURES, name));
      importPeftAdapter(copy, 'again', exported.adapterConfig, exported.adapterSafetensors);
      expect(exportPeftAdapter(copy, 'again', name).adapterSafetensors).toEqual(
        exported.adapterSafetensors,
      );
      copy.dispose();
    } finally {
      model.dispose();
    }
  });

  it('decodes with the KV cache as the full forward does at every position', async () => {
    const model = await loadCausalLM(join(FIXTURES, name));
    try {
      await loadPeftAdapter(model, 'ref', join(FIXTURES, `${name}-adapter`));
      const ids = readInputs(name).input_ids[0];
      const full = tf.tidy(
        () => model.forward(tf.tensor2d([ids], undefined, 'int32')).arraySync()[0],
      ); // [T, V]
      const decoder = new KvCacheDecoder(model, 'ref');
      const first = decoder.step(ids.slice(0, 3));
      expect(maxAbsDiff(first.dataSync(), full[2])).toBeLessThanOrEqual(1e-4);
      first.dispose();
      for (let t = 3; t < ids.length; t++) {
        const logits = decoder.step([ids[t]]);
        expect(maxAbsDiff(logits.dataSync(), full[t])).toBeLessThanOrEqual(1e-4);
        logits.dispose();
      }
      decoder.dispose();
    } finally {
      model.dispose();
    }
  });

  it('gives the same loss gradients with gradient checkpointing', async () => {
    const model = await loadCausalLM(join(FIXTURES, name));
    try {
      await loadPeftAdapter(model, 'ref', join(FIXTURES, `${name}-adapter`));
      const inputs = readInputs(name);
      const shifted = shiftTargets(inputs.input_ids, inputs.loss_mask, model.config.vocabSize);
      const gradients = (checkpointing: boolean): Float32Array[] => {
        model.gradientCheckpointing = checkpointing;
        const variables = model.trainableVariables();
        const ids = tf.tensor2d(inputs.input_ids, undefined, 'int32');
        const mask = tf.tensor2d(inputs.attention_mask);
        const { value, grads } = tf.variableGrads(
          () => model.forwardLoss(ids, mask, shifted, { training: true }).nll,
          variables,
        );
        const out = variables.map((v) => grads[v.name].dataSync() as Float32Array);
        tf.dispose([ids, mask, value, ...Object.values(grads)]);
        return out;
      };
      const plain = gradients(false);
      const checkpointed = gradients(true);
      plain.forEach((g, i) => expect(maxAbsDiff(checkpointed[i], g)).toBeLessThanOrEqual(1e-5));
    } finally {
      model.dispose();
    }
  });
});

describe('gemma2 soft-capped head', () => {
  it('counts whole logits in the memory estimate (the capped head is not chunked)', () => {
    const input = {
      batchSize: 2,
      seqLength: 512,
      lora: { r: 8, targetModules: ['q_proj', 'v_proj'] },
      weightBytesPerParameter: 2,
      gradientCheckpointing: true,
    };
    const capped = estimateTrainingMemory({ ...input, config: parseModelConfig(GEMMA2_2B) });
    const uncapped = estimateTrainingMemory({
      ...input,
      config: parseModelConfig({ ...GEMMA2_2B, final_logit_softcapping: null }),
    });
    expect(capped.parts.head).toBeGreaterThanOrEqual(4 * 1024 * 256000 * 4);
    expect(uncapped.parts.head).toBeLessThan(capped.parts.head / 4);
  });

  it('routes the fused loss through the capped logits: forwardLoss equals the loss of forward', async () => {
    const name = 'gemma2-tiny';
    const model = await loadCausalLM(join(FIXTURES, name));
    try {
      const inputs = readInputs(name);
      const shifted = shiftTargets(inputs.input_ids, inputs.loss_mask, model.config.vocabSize);
      const [fused, reference, largest] = tf.tidy(() => {
        const ids = tf.tensor2d(inputs.input_ids, undefined, 'int32');
        const mask = tf.tensor2d(inputs.attention_mask);
        const lossMask = tf.tensor2d(inputs.loss_mask);
        const logits = model.forward(ids, mask); // [B, T, V]
        return [
          model.forwardLoss(ids, mask, shifted).nll.dataSync()[0] / shifted.count,
          causalLmLoss(logits, ids, lossMask).dataSync()[0],
          tf.max(tf.abs(logits)).dataSync()[0],
        ];
      });
      expect(Math.abs(fused - reference)).toBeLessThanOrEqual(1e-6);
      // The cap binds: every logit lies within ±final_logit_softcapping.
      expect(largest).toBeLessThanOrEqual(3);
    } finally {
      model.dispose();
    }
  });
});

describe.each(FAMILIES)('%s fine-tuning', (name) => {
  it("trains on PEFT's default targets, exports them, and caps max_seq_length at the window", async () => {
    // The fixture's shape with the tiny GPT-2 tokenizer's vocabulary (269 tokens).
    const raw = { ...configOf(name).raw, vocab_size: 269 };
    const config = parseModelConfig(raw) as DecoderConfig;
    const model = createRandomCausalLM(config, 5);
    try {
      const result = await runFineTune({
        model: { model, tokenizer: await tinyTokenizer(), name },
        trainJsonl: pairsJsonl(),
        // The default max_seq_length comes from the one resolver, over lora-core's context.
        spec: resolveFineTuneSpec(
          {
            seed: 42,
            lora: { r: 2, alpha: 4 },
            hyperparameters: { n_epochs: 1, batch_size: 4 },
            training: { learning_rate: 5e-3 },
          },
          { model: name, contextLength: contextLength(config), trainingExamples: 8 },
        ),
        samples: { count: 1, maxNewTokens: 4 },
        validationJsonl: pairsJsonl().split('\n').slice(0, 2).join('\n'),
      });
      expect(Number.isFinite(result.finalTrainLoss)).toBe(true);
      expect(result.adapter.adapterConfig.target_modules).toEqual(
        [...defaultTargetModules(config.modelType)].sort(),
      );
      const keys = [...readSafetensors(result.adapter.adapterSafetensors).tensors.keys()];
      const module = defaultTargetModules(config.modelType)[0];
      expect(keys).toContain(`base_model.model.model.layers.0.self_attn.${module}.lora_A.weight`);
      // Mistral's fixture has sliding_window 8: the default max_seq_length stops there.
      expect(result.lineage.spec.training.max_seq_length).toBe(config.slidingWindow ?? 64);
    } finally {
      model.dispose();
    }
  });
});
