import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';

import {
  ModelConfigError,
  ModelWeightsError,
  addLoraAdapter,
  createRandomCausalLM,
  initBackend,
  loadCausalLM,
  loadPeftAdapter,
  mergeAdapter,
  parseModelConfig,
  readSafetensors,
  saveHfModel,
  writeSafetensors,
  type CausalLM,
  type SafetensorsInput,
} from '../src';
import { FIXTURES, ids2d, maxAbsDiff, readExpected, readInputs } from './fixture.helpers';

const GPT2_DIR = join(FIXTURES, 'gpt2-tiny');
const gpt2Tensors = () =>
  readSafetensors(readFileSync(join(GPT2_DIR, 'model.safetensors'))).tensors;

let scratch: string;
beforeAll(async () => {
  await initBackend('cpu');
  scratch = await mkdtemp(join(tmpdir(), 'lora-core-'));
});
afterAll(() => rm(scratch, { recursive: true }));

/** Writes a model dir with the fixture config and the given tensors. */
async function modelDir(
  name: string,
  tensors: Record<string, SafetensorsInput>,
  config?: object,
): Promise<string> {
  const dir = join(scratch, name);
  await mkdir(dir, { recursive: true });
  if (config) await writeFile(join(dir, 'config.json'), JSON.stringify(config));
  else await copyFile(join(GPT2_DIR, 'config.json'), join(dir, 'config.json'));
  await writeFile(join(dir, 'model.safetensors'), writeSafetensors(tensors));
  return dir;
}

function logitsOf(model: CausalLM, name = 'gpt2-tiny', masked = true): Float32Array {
  const inputs = readInputs(name);
  return tf.tidy(
    () =>
      model
        .forward(ids2d(inputs.input_ids), masked ? tf.tensor2d(inputs.attention_mask) : undefined)
        .dataSync() as Float32Array,
  );
}

describe('loading Hugging Face directories', () => {
  it('accepts GPT-2 keys with and without the transformer. prefix', async () => {
    const bare = await loadCausalLM(GPT2_DIR);
    const prefixed: Record<string, SafetensorsInput> = {};
    for (const [k, t] of gpt2Tensors()) prefixed[`transformer.${k}`] = t;
    const withPrefix = await loadCausalLM(await modelDir('prefixed', prefixed));
    expect(Array.from(logitsOf(withPrefix))).toEqual(Array.from(logitsOf(bare)));
    bare.dispose();
    withPrefix.dispose();
  });

  it('records the sha256 of the weights file', async () => {
    const model = await loadCausalLM(GPT2_DIR);
    const expected = createHash('sha256')
      .update(await readFile(join(GPT2_DIR, 'model.safetensors')))
      .digest('hex');
    expect(model.baseModelSha256).toBe(expected);
    model.dispose();
  });

  it('ignores attention-mask buffers and a duplicated tied lm_head', async () => {
    const tensors: Record<string, SafetensorsInput> = Object.fromEntries(gpt2Tensors());
    tensors['h.0.attn.bias'] = { shape: [1, 1, 2, 2], data: new Float32Array([1, 0, 1, 1]) };
    tensors['lm_head.weight'] = tensors['wte.weight'];
    const model = await loadCausalLM(await modelDir('buffers', tensors));
    model.dispose();
  });

  it('loads sharded checkpoints through model.safetensors.index.json', async () => {
    const dir = join(scratch, 'sharded');
    await mkdir(dir, { recursive: true });
    await copyFile(join(GPT2_DIR, 'config.json'), join(dir, 'config.json'));
    const entries = [...gpt2Tensors()];
    const half = Math.floor(entries.length / 2);
    const shards = [entries.slice(0, half), entries.slice(half)];
    const weightMap: Record<string, string> = {};
    for (const [i, shard] of shards.entries()) {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      await writeFile(join(dir, file), writeSafetensors(Object.fromEntries(shard)));
      for (const [k] of shard) weightMap[k] = file;
    }
    await writeFile(
      join(dir, 'model.safetensors.index.json'),
      JSON.stringify({ metadata: {}, weight_map: weightMap }),
    );
    const sharded = await loadCausalLM(dir);
    const single = await loadCausalLM(GPT2_DIR);
    expect(Array.from(logitsOf(sharded))).toEqual(Array.from(logitsOf(single)));
    sharded.dispose();
    single.dispose();
  });

  it('refuses a shard path outside the model directory without opening it', async () => {
    const dir = join(scratch, 'traversal');
    await mkdir(dir, { recursive: true });
    await copyFile(join(GPT2_DIR, 'config.json'), join(dir, 'config.json'));
    const weightMap = Object.fromEntries(
      [...gpt2Tensors().keys()].map((k) => [k, '../../../../etc/passwd']),
    );
    await writeFile(
      join(dir, 'model.safetensors.index.json'),
      JSON.stringify({ metadata: {}, weight_map: weightMap }),
    );
    await expect(loadCausalLM(dir)).rejects.toThrow(
      /shard "\.\.\/\.\.\/\.\.\/\.\.\/etc\/passwd" is outside the model directory/,
    );
  });

  it('streams BF16 shards tensor by tensor to the same values as decoding them whole', async () => {
    const dir = join(scratch, 'bf16-sharded');
    await mkdir(dir, { recursive: true });
    await copyFile(join(GPT2_DIR, 'config.json'), join(dir, 'config.json'));
    const entries = [...gpt2Tensors()];
    const half = Math.floor(entries.length / 2);
    const weightMap: Record<string, string> = {};
    for (const [i, shard] of [entries.slice(0, half), entries.slice(half)].entries()) {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      // BF16 by truncation: the top 16 bits of each float32.
      const bytes = writeSafetensors(Object.fromEntries(shard));
      const f32 = readSafetensors(bytes).tensors;
      const bf16 = Object.fromEntries(
        [...f32].map(([k, t]) => {
          const bits = new Uint32Array(new Float32Array(t.data).buffer);
          return [k, { shape: t.shape, data: Uint16Array.from(bits, (b) => b >>> 16) }];
        }),
      );
      await writeFile(join(dir, file), encodeBf16Safetensors(bf16));
      for (const [k] of shard) weightMap[k] = file;
    }
    await writeFile(
      join(dir, 'model.safetensors.index.json'),
      JSON.stringify({ metadata: {}, weight_map: weightMap }),
    );
    const streamed = await loadCausalLM(dir);
    const whole = new Map<string, Float32Array>();
    for (const file of new Set(Object.values(weightMap))) {
      for (const [k, t] of readSafetensors(readFileSync(join(dir, file))).tensors)
        whole.set(k, t.data);
    }
    for (const p of streamed.baseParameters()) {
      const alias = whole.has(p.key) ? p.key : p.key.replace(/^transformer\./, '');
      expect({
        key: p.key,
        equal: Array.from(await p.read()).every((v, i) => v === whole.get(alias)![i]),
      }).toEqual({
        key: p.key,
        equal: true,
      });
    }
    streamed.dispose();
  });

  it('names a missing tensor', async () => {
    const tensors: Record<string, SafetensorsInput> = Object.fromEntries(gpt2Tensors());
    delete tensors['h.1.mlp.c_fc.bias'];
    await expect(loadCausalLM(await modelDir('missing', tensors))).rejects.toMatchObject({
      name: 'ModelWeightsError',
      tensorName: 'transformer.h.1.mlp.c_fc.bias',
    });
  });

  it('names a mis-shaped tensor', async () => {
    const tensors: Record<string, SafetensorsInput> = Object.fromEntries(gpt2Tensors());
    tensors['h.0.attn.c_attn.weight'] = {
      shape: [96, 32],
      data: tensors['h.0.attn.c_attn.weight'].data,
    };
    await expect(loadCausalLM(await modelDir('misshaped', tensors))).rejects.toThrow(
      /h\.0\.attn\.c_attn\.weight.*\[96,32\]/,
    );
  });

  it('rejects tensors the config does not account for', async () => {
    const tensors: Record<string, SafetensorsInput> = Object.fromEntries(gpt2Tensors());
    tensors['h.2.ln_1.weight'] = { shape: [32], data: new Float32Array(32) };
    const error = await loadCausalLM(await modelDir('extra', tensors)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelWeightsError);
    expect((error as ModelWeightsError).tensorName).toBe('h.2.ln_1.weight');
  });

  it.each([
    ['F32', NaN],
    ['F32', Infinity],
    ['BF16', -Infinity],
  ])(
    'refuses a %s weight holding %p, naming the tensor (issue 14, item 18)',
    async (dtype, value) => {
      const tensors: Record<string, SafetensorsInput> = Object.fromEntries(gpt2Tensors());
      const name = 'h.1.mlp.c_proj.weight';
      const data = new Float32Array(tensors[name].data);
      data[7] = value;
      tensors[name] = { ...tensors[name], data };
      const dir = await modelDir(`non-finite-${dtype}-${value}`, tensors);
      if (dtype === 'BF16') {
        // Re-encode every tensor as BF16 (the top half of each float32, as HF writes it).
        const bf16 = Object.fromEntries(
          Object.entries(tensors).map(([k, t]) => {
            const bits = new Uint32Array(new Float32Array(t.data).buffer);
            return [k, { shape: t.shape, data: Uint16Array.from(bits, (b) => b >>> 16) }];
          }),
        );
        await writeFile(join(dir, 'model.safetensors'), encodeBf16Safetensors(bf16));
      }
      const error = await loadCausalLM(dir).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ModelWeightsError);
      expect((error as ModelWeightsError).tensorName).toBe(name);
      expect((error as Error).message).toMatch(
        new RegExp(
          `"${name.replace(/\./g, '\\.')}" holds a non-finite value \\(-?(NaN|Infinity) at flat index 7\\)`,
        ),
      );
    },
  );

  it('rejects configs it cannot honour, naming the key', () => {
    const cases: Array<[object, string]> = [
      [{ model_type: 'gemma3' }, 'model_type'],
      [
        { model_type: 'llama', rope_scaling: { rope_type: 'yarn', factor: 4 } },
        'rope_scaling.rope_type',
      ],
      [{ model_type: 'llama', hidden_act: 'gelu' }, 'hidden_act'],
      [
        { model_type: 'llama', num_attention_heads: 6, num_key_value_heads: 4 },
        'num_key_value_heads',
      ],
      [{ model_type: 'gpt2', activation_function: 'mish' }, 'activation_function'],
      [{ model_type: 'gpt2', n_embd: 10, n_head: 3 }, 'n_head'],
      [{ model_type: 'gpt2', vocab_size: -1 }, 'vocab_size'],
    ];
    for (const [json, key] of cases) {
      let caught: unknown;
      try {
        parseModelConfig(json);
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(ModelConfigError);
      expect((caught as ModelConfigError).key).toBe(key);
    }
  });

  it('applies transformers defaults to omitted config fields', () => {
    const cfg = parseModelConfig({ model_type: 'llama' });
    expect(cfg).toMatchObject({
      hiddenSize: 4096,
      numKeyValueHeads: 32,
      headDim: 128,
      ropeTheta: 10000,
      tieWordEmbeddings: false,
    });
    expect(parseModelConfig({ model_type: 'gpt2' })).toMatchObject({
      innerSize: 3072,
      tieWordEmbeddings: true,
      activation: 'gelu_new',
    });
  });
});

describe.each(['gpt2-tiny', 'llama-tiny'])('merged Hugging Face export: %s', (name) => {
  it('writes a directory whose base logits equal the PyTorch LoRA logits', async () => {
    const model = await loadCausalLM(join(FIXTURES, name));
    await loadPeftAdapter(model, 'ref', join(FIXTURES, `${name}-adapter`));
    mergeAdapter(model);
    const out = join(scratch, `${name}-merged`);
    await saveHfModel(model, out, { companionsFrom: join(FIXTURES, name) });
    model.dispose();

    const stored = readSafetensors(await readFile(join(out, 'model.safetensors')));
    expect(stored.metadata).toEqual({ format: 'pt' });
    const prefix = name.startsWith('gpt2') ? 'transformer.' : 'model.';
    expect(
      [...stored.tensors.keys()].every((k) => k.startsWith(prefix) || k === 'lm_head.weight'),
    ).toBe(true);
    const merged = await loadCausalLM(out);
    const expected = readExpected(name).get('logits_lora')!.data;
    expect(maxAbsDiff(logitsOf(merged, name), expected)).toBeLessThanOrEqual(1e-4);
    merged.dispose();
  });
});

describe('model behaviour', () => {
  const config = parseModelConfig({
    model_type: 'gpt2',
    vocab_size: 20,
    n_embd: 8,
    n_head: 2,
    n_layer: 1,
    n_positions: 6,
  });

  it('leaks no tensors across forward passes', () => {
    const model = createRandomCausalLM(config, 1);
    addLoraAdapter(
      model,
      'a',
      { r: 2, alpha: 2, dropout: 0.1, targetModules: 'all-linear', useRslora: false },
      1,
    );
    const ids = tf.tensor2d([[1, 2, 3]], undefined, 'int32');
    tf.dispose(model.forward(ids));
    const before = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) tf.dispose(model.forward(ids, undefined, { training: true }));
    expect(tf.memory().numTensors).toBe(before);
    ids.dispose();
    model.dispose();
  });

  it('applies adapter dropout only in training, reproducibly per seed', () => {
    const model = createRandomCausalLM(config, 1);
    addLoraAdapter(
      model,
      'a',
      { r: 2, alpha: 2, dropout: 0.5, targetModules: 'all-linear', useRslora: false },
      1,
    );
    for (const layer of model.linearLayers())
      layer.adapters.get('a')!.b.assign(tf.onesLike(layer.adapters.get('a')!.b));
    const ids = tf.tensor2d([[1, 2, 3, 4]], undefined, 'int32');
    const run = (opts?: { training: boolean; dropoutSeed: number }) =>
      tf.tidy(() => model.forward(ids, undefined, opts).dataSync() as Float32Array);
    expect(Array.from(run())).toEqual(Array.from(run()));
    expect(Array.from(run({ training: true, dropoutSeed: 3 }))).toEqual(
      Array.from(run({ training: true, dropoutSeed: 3 })),
    );
    expect(maxAbsDiff(run({ training: true, dropoutSeed: 3 }), run())).toBeGreaterThan(1e-4);
    ids.dispose();
    model.dispose();
  });

  it('rejects sequences longer than n_positions and mismatched masks', () => {
    const model = createRandomCausalLM(config, 1);
    expect(() => model.forward(tf.zeros([1, 7], 'int32'))).toThrow(/n_positions/);
    expect(() => model.forward(tf.zeros([1, 3], 'int32'), tf.ones([1, 4]))).toThrow(
      /attentionMask/,
    );
    model.dispose();
  });

  it('full-parameter mode makes every weight a trainable Variable and refuses adapters', () => {
    const model = createRandomCausalLM(config, 1, { mode: 'full' });
    const vars = model.trainableVariables();
    expect(vars.length).toBe(model.baseParameters().length);
    expect(vars.every((v) => v instanceof tf.Variable && v.trainable)).toBe(true);
    expect(() =>
      addLoraAdapter(
        model,
        'a',
        { r: 1, alpha: 1, dropout: 0, targetModules: ['c_attn'], useRslora: false },
        0,
      ),
    ).toThrow(/lora/);
    const ids = tf.tensor2d([[1, 2, 3]], undefined, 'int32');
    const { grads, value } = tf.variableGrads(() => tf.mean<tf.Scalar>(model.forward(ids)), vars);
    // Every weight receives a gradient, embeddings and norms included.
    expect(Object.keys(grads)).toHaveLength(vars.length);
    tf.dispose([ids, value, ...Object.values(grads)]);
    model.dispose();
  });
});

/** A safetensors file of BF16 tensors (the codec writes F32 only), sorted keys, 8-byte aligned. */
function encodeBf16Safetensors(
  tensors: Record<string, { shape: number[]; data: Uint16Array }>,
): Uint8Array {
  const header: Record<string, unknown> = {};
  let offset = 0;
  const names = Object.keys(tensors).sort();
  for (const name of names) {
    const bytes = tensors[name].data.length * 2;
    header[name] = {
      dtype: 'BF16',
      shape: tensors[name].shape,
      data_offsets: [offset, offset + bytes],
    };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + json.length) % 8)) % 8);
  const out = new Uint8Array(8 + json.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(new TextEncoder().encode(json), 8);
  let cursor = 8 + json.length;
  for (const name of names) {
    out.set(new Uint8Array(tensors[name].data.buffer), cursor);
    cursor += tensors[name].data.length * 2;
  }
  return out;
}
