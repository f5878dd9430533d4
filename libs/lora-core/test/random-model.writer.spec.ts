import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';

import {
  MODEL_SHAPES,
  MODEL_SHAPE_NAMES,
  countBaseParameters,
  hfStateDict,
  initBackend,
  loadCausalLM,
  parseModelConfig,
  readSafetensors,
  readSafetensorsHeader,
  writeRandomModelDir,
} from '../src';

const MODELS = join(__dirname, '..', '..', '..', 'models');

// Small custom shapes: GQA and a tied head for Llama, Conv1D layout for GPT-2.
const LLAMA = {
  model_type: 'llama',
  vocab_size: 2100,
  hidden_size: 64,
  intermediate_size: 96,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 64,
  tie_word_embeddings: true,
};
const GPT2 = {
  model_type: 'gpt2',
  vocab_size: 300,
  n_embd: 32,
  n_layer: 2,
  n_head: 2,
  n_positions: 16,
};

let scratch: string;
beforeAll(async () => {
  await initBackend('cpu');
  scratch = await mkdtemp(join(tmpdir(), 'random-model-'));
});
afterAll(() => rm(scratch, { recursive: true }));

const tensorsOf = (dir: string) =>
  readSafetensors(readFileSync(join(dir, 'model.safetensors'))).tensors;

describe('MODEL_SHAPES', () => {
  it('parse as the architectures and sizes of issue 13', () => {
    const parsed = MODEL_SHAPE_NAMES.map((name) => parseModelConfig(MODEL_SHAPES[name].config));
    // Parameter counts of the public checkpoints (Llama-0.5b lacks Qwen2's q/k/v biases).
    expect(parsed.map(countBaseParameters)).toEqual([
      124_439_808,
      134_515_008,
      494_032_768 - 24 * (896 + 2 * 128),
      1_235_814_400,
    ]);
    expect(parsed.map((c) => c.tieWordEmbeddings)).toEqual([true, true, true, true]);
    expect(MODEL_SHAPE_NAMES.map((n) => MODEL_SHAPES[n].batchSize)).toEqual([4, 4, 2, 1]);
  });
});

describe('writeRandomModelDir', () => {
  it('writes F32 and BF16 Llama directories that load, with the same values', async () => {
    const f32Dir = join(scratch, 'llama-f32');
    const bf16Dir = join(scratch, 'llama-bf16');
    const tokenizerFrom = join(MODELS, 'lorafleet-tiny-llama');
    const f32 = await writeRandomModelDir(f32Dir, LLAMA, { seed: 3, dtype: 'F32', tokenizerFrom });
    await writeRandomModelDir(bf16Dir, LLAMA, { seed: 3, dtype: 'BF16', tokenizerFrom });
    expect(f32.parameters).toBe(countBaseParameters(parseModelConfig(LLAMA)));
    expect(existsSync(join(f32Dir, 'tokenizer.json'))).toBe(true);
    // The tokenizer's special ids replace the shape's.
    expect(f32.config.eos_token_id).toBe(2046);

    const header = readSafetensorsHeader(readFileSync(join(bf16Dir, 'model.safetensors')));
    expect(header.dataStart % 8).toBe(0);
    expect(header.metadata).toEqual({ format: 'pt' });
    expect([...header.tensors.values()].every((t) => t.dtype === 'BF16')).toBe(true);

    const f32Tensors = tensorsOf(f32Dir);
    const bf16Tensors = tensorsOf(bf16Dir);
    expect(f32Tensors.has('lm_head.weight')).toBe(false); // tied
    expect(f32Tensors.get('model.layers.0.self_attn.k_proj.weight')!.shape).toEqual([32, 64]);
    expect(f32Tensors.get('model.layers.1.mlp.down_proj.weight')!.shape).toEqual([64, 96]);
    const norm = f32Tensors.get('model.layers.1.input_layernorm.weight')!.data;
    expect(norm.every((v) => v === 1)).toBe(true);

    const embed = f32Tensors.get('model.embed_tokens.weight')!.data; // [2100, 64]
    const mean = embed.reduce((s, v) => s + v, 0) / embed.length;
    const std = Math.sqrt(embed.reduce((s, v) => s + (v - mean) ** 2, 0) / embed.length);
    expect(Math.abs(mean)).toBeLessThan(5e-4);
    expect(std).toBeCloseTo(0.02, 3);
    // BF16 is F32 rounded to nearest (8 significant bits).
    const embedBf16 = bf16Tensors.get('model.embed_tokens.weight')!.data;
    let worst = 0;
    embed.forEach((v, i) => (worst = Math.max(worst, Math.abs(embedBf16[i] - v) / Math.abs(v))));
    expect(worst).toBeLessThanOrEqual(2 ** -8); // half an ulp of a 7-bit mantissa
    expect(worst).toBeGreaterThan(0);

    for (const [dir, expected] of [
      [f32Dir, f32Tensors],
      [bf16Dir, bf16Tensors],
    ] as const) {
      const model = await loadCausalLM(dir);
      const loaded = await hfStateDict(model);
      expect([...loaded.keys()].sort()).toEqual([...expected.keys()].sort());
      const key = 'model.layers.0.self_attn.q_proj.weight';
      expect(loaded.get(key)!.data).toEqual(expected.get(key)!.data);
      const logits = tf.tidy(() => model.forward(tf.tensor2d([[1, 2, 3]], undefined, 'int32')));
      expect(logits.shape).toEqual([1, 3, 2100]);
      expect((await logits.data()).every(Number.isFinite)).toBe(true);
      logits.dispose();
      model.dispose();
    }
  });

  it('writes GPT-2 with the transformer. prefix and attn.bias buffers, which load', async () => {
    const dir = join(scratch, 'gpt2-prefixed');
    const tokenizerFrom = join(MODELS, 'tiny-random-gpt2');
    await writeRandomModelDir(dir, GPT2, { seed: 1, tokenizerFrom, attnBiasBuffers: true });
    const tensors = tensorsOf(dir);
    expect([...tensors.keys()].every((k) => k.startsWith('transformer.'))).toBe(true);
    expect(tensors.get('transformer.h.0.attn.c_attn.weight')!.shape).toEqual([32, 96]); // Conv1D
    const mask = tensors.get('transformer.h.1.attn.bias')!;
    expect(mask.shape).toEqual([1, 1, 16, 16]);
    expect([mask.data[0], mask.data[1], mask.data[16], mask.data[17], mask.data[255]]).toEqual([
      1, 0, 1, 1, 1,
    ]);
    const model = await loadCausalLM(dir);
    const loaded = await hfStateDict(model);
    expect(loaded.has('transformer.h.0.attn.bias')).toBe(false);
    expect(loaded.get('transformer.wte.weight')!.data).toEqual(
      tensors.get('transformer.wte.weight')!.data,
    );
    model.dispose();

    // Unprefixed (a bare GPT2Model checkpoint): same values under the short keys.
    const bare = join(scratch, 'gpt2-bare');
    await writeRandomModelDir(bare, GPT2, { seed: 1, gpt2Prefix: false });
    const bareTensors = tensorsOf(bare);
    expect(bareTensors.get('wte.weight')!.data).toEqual(
      tensors.get('transformer.wte.weight')!.data,
    );
    (await loadCausalLM(bare)).dispose();
  });

  it('refuses a tokenizer whose ids do not fit the vocabulary', async () => {
    await expect(
      writeRandomModelDir(join(scratch, 'too-small'), GPT2, {
        tokenizerFrom: join(MODELS, 'lorafleet-tiny-llama'),
      }),
    ).rejects.toThrow(/token id 2047, outside the shape's vocabulary of 300/);
  });
});
