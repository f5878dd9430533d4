/**
 * Writes a Hugging Face model directory with random weights at a real model's shapes
 * (issue 13): config.json, model.safetensors and tokenizer files, nothing downloaded.
 * Initialised like transformers: N(0, 0.02) for matrices and embeddings, norms 1, biases 0.
 *
 * The safetensors file is streamed to disk tensor by tensor in fixed-size chunks, so the
 * writer holds a few MiB whatever the model: `llama-1b` in F32 is 5 GB.
 *
 * Random numbers: `SeededRandom.normal` (mulberry32 + Box–Muller) costs about 20 ns a
 * value, 25 s for 1.2B values. Here one xorshift32 draw gives two 16-bit indices into a
 * table of the 65,536 normal quantiles Φ⁻¹((i + ½) / 65536) · 0.02, a few ns a value. The
 * values are a 16-bit discretisation of N(0, 0.02²) cut at ±4.3σ, which random weights do
 * not notice (bf16 keeps 8 significant bits anyway). Each tensor has its own stream seeded
 * by `deriveSeed(seed, key)`, so F32 and BF16 files of one seed hold the same values, BF16
 * rounded to nearest even from F32.
 */
import { copyFile, mkdir, open, readFile, rename, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { linearModuleSpecs } from '../params/parameter-count.util';
import { buildSafetensorsHeader } from '../safetensors/safetensors.codec';
import { deriveSeed } from '../util/rng.util';
import { parseModelConfig, type ModelConfig } from './model.config';
import { modelShape, type ModelShapeName } from './model-shapes';

export type RandomModelDtype = 'F32' | 'BF16';

export interface RandomModelOptions {
  /** Seeds every tensor's stream (default 0). */
  seed?: number;
  /** Stored dtype of the weights (default: the shape's, else F32). */
  dtype?: RandomModelDtype;
  /**
   * A model directory whose tokenizer files are copied (e.g. `models/tiny-random-gpt2`).
   * Its token ids must fit the shape's vocabulary; its bos/eos/pad ids replace the shape's,
   * which name tokens the copied tokenizer does not have.
   */
  tokenizerFrom?: string;
  /** GPT-2 only: keys carry `GPT2LMHeadModel`'s `transformer.` prefix (default true). */
  gpt2Prefix?: boolean;
  /**
   * GPT-2 only: also store each block's causal-mask buffer `attn.bias` [1, 1, P, P], as the
   * openai-community checkpoints do (default false). Loaders ignore it.
   */
  attnBiasBuffers?: boolean;
}

export interface RandomModelSummary {
  dir: string;
  config: Record<string, unknown>;
  dtype: RandomModelDtype;
  /** Parameters stored (buffers excluded). */
  parameters: number;
  /** Size of model.safetensors. */
  bytes: number;
}

type Init = 'normal' | 'ones' | 'zeros' | 'causal-mask';

interface TensorPlan {
  name: string;
  shape: number[];
  init: Init;
}

const TOKENIZER_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'vocab.json',
  'merges.txt',
  'tokenizer.model',
  'added_tokens.json',
];
const TOKEN_ID_KEYS = ['bos_token_id', 'eos_token_id', 'pad_token_id'] as const;

/** Elements generated per write: 4 MiB of F32, small beside any model. */
const CHUNK_ELEMENTS = 1 << 20;
const INIT_STD = 0.02;
const IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Every stored tensor of the `*ForCausalLM` checkpoint `config` describes. */
function tensorPlan(config: ModelConfig, gpt2Prefix: boolean, attnBias: boolean): TensorPlan[] {
  const C = config.hiddenSize;
  const plan: TensorPlan[] = [];
  const add = (name: string, shape: number[], init: Init) => plan.push({ name, shape, init });
  for (const spec of linearModuleSpecs(config)) {
    // GPT-2's Conv1D stores [in, out]; nn.Linear (Llama, any lm_head) stores [out, in].
    const conv1d = config.modelType === 'gpt2' && spec.path !== 'lm_head';
    const shape = conv1d
      ? [spec.inFeatures, spec.outFeatures]
      : [spec.outFeatures, spec.inFeatures];
    add(`${spec.path}.weight`, shape, 'normal');
    if (spec.hasBias) add(`${spec.path}.bias`, [spec.outFeatures], 'zeros');
  }
  if (config.modelType === 'gpt2') {
    add('transformer.wte.weight', [config.vocabSize, C], 'normal');
    add('transformer.wpe.weight', [config.maxPositions, C], 'normal');
    const norm = (key: string) => {
      add(`${key}.weight`, [C], 'ones');
      add(`${key}.bias`, [C], 'zeros');
    };
    for (let i = 0; i < config.numLayers; i++) {
      norm(`transformer.h.${i}.ln_1`);
      norm(`transformer.h.${i}.ln_2`);
      if (attnBias) {
        const P = config.maxPositions;
        add(`transformer.h.${i}.attn.bias`, [1, 1, P, P], 'causal-mask');
      }
    }
    norm('transformer.ln_f');
    if (!gpt2Prefix) {
      for (const t of plan) t.name = t.name.replace(/^transformer\./, '');
    }
  } else {
    // Gemma scales by (1 + w), so its neutral norm weight is 0 (transformers inits zeros).
    const normInit: Init = config.normOffset === 1 ? 'zeros' : 'ones';
    add('model.embed_tokens.weight', [config.vocabSize, C], 'normal');
    for (let i = 0; i < config.numLayers; i++) {
      add(`model.layers.${i}.input_layernorm.weight`, [C], normInit);
      add(`model.layers.${i}.post_attention_layernorm.weight`, [C], normInit);
      if (config.sandwichNorms) {
        add(`model.layers.${i}.pre_feedforward_layernorm.weight`, [C], normInit);
        add(`model.layers.${i}.post_feedforward_layernorm.weight`, [C], normInit);
      }
      if (config.qkNorm) {
        add(`model.layers.${i}.self_attn.q_norm.weight`, [config.headDim], 'ones');
        add(`model.layers.${i}.self_attn.k_norm.weight`, [config.headDim], 'ones');
      }
    }
    add('model.norm.weight', [C], normInit);
  }
  return plan;
}

/** Φ⁻¹(p) by Acklam's rational approximation (relative error below 1.2e-9). */
function normalQuantile(p: number): number {
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239]; // prettier-ignore
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572]; // prettier-ignore
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783]; // prettier-ignore
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const tail = (q: number) =>
    (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
    ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  if (p < 0.02425) return tail(Math.sqrt(-2 * Math.log(p)));
  if (p > 1 - 0.02425) return -tail(Math.sqrt(-2 * Math.log(1 - p)));
  const q = p - 0.5;
  const r = q * q;
  return (
    ((((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q) /
    (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
  );
}

/** bf16 bits of an f32 value, rounded to nearest even (NaN stays NaN). */
function bf16Bits(value: number, scratch: Float32Array, bits: Uint32Array): number {
  scratch[0] = value;
  const u = bits[0];
  if ((u & 0x7fffffff) > 0x7f800000) return (u >>> 16) | 0x40;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

let quantileTables: { f32: Float32Array; bf16: Uint16Array } | undefined;

/** The 65,536 quantiles of N(0, 0.02²), as F32 and as BF16 bits. */
function normalTables(): { f32: Float32Array; bf16: Uint16Array } {
  if (!quantileTables) {
    const f32 = new Float32Array(65536);
    const bf16 = new Uint16Array(65536);
    const scratch = new Float32Array(1);
    const bits = new Uint32Array(scratch.buffer);
    for (let i = 0; i < 65536; i++) {
      f32[i] = normalQuantile((i + 0.5) / 65536) * INIT_STD;
      bf16[i] = bf16Bits(f32[i], scratch, bits);
    }
    quantileTables = { f32, bf16 };
  }
  return quantileTables;
}

/** xorshift32 with a 32-bit output scramble; state never 0. */
class Xorshift32 {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0 || 0x9e3779b9;
  }

  next(): number {
    let x = this.state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.state = x >>> 0;
    return Math.imul(this.state, 0x9e3779bb) >>> 0;
  }
}

/**
 * Fills `out` (F32 values or BF16 bits) with elements [start, start + out.length) of a
 * tensor. Normal values come from `rng` in order, so chunk boundaries do not change them.
 */
function fillChunk(
  out: Float32Array | Uint16Array,
  plan: TensorPlan,
  start: number,
  rng: Xorshift32,
): void {
  const bf16 = out instanceof Uint16Array;
  const one = bf16 ? 0x3f80 : 1;
  switch (plan.init) {
    case 'zeros':
      out.fill(0);
      return;
    case 'ones':
      out.fill(one);
      return;
    case 'causal-mask': {
      // [1, 1, P, P] lower-triangular ones: row i sees columns 0..i.
      const P = plan.shape[3];
      for (let k = 0; k < out.length; k++) {
        const flat = start + k;
        out[k] = flat % P <= Math.floor(flat / P) ? one : 0;
      }
      return;
    }
    case 'normal': {
      const table = bf16 ? normalTables().bf16 : normalTables().f32;
      let k = 0;
      for (; k + 1 < out.length; k += 2) {
        const r = rng.next();
        out[k] = table[r & 0xffff];
        out[k + 1] = table[r >>> 16];
      }
      if (k < out.length) out[k] = table[rng.next() & 0xffff];
      return;
    }
  }
}

function littleEndianBytes(chunk: Float32Array | Uint16Array, n: number): Uint8Array {
  const width = chunk.BYTES_PER_ELEMENT;
  const bytes = new Uint8Array(chunk.buffer, chunk.byteOffset, n * width);
  if (!IS_LITTLE_ENDIAN) {
    for (let i = 0; i < bytes.length; i += width) bytes.subarray(i, i + width).reverse();
  }
  return bytes;
}

/** Highest token id a tokenizer.json defines (vocabulary and added tokens). */
async function maxTokenId(tokenizerPath: string): Promise<number> {
  const json = JSON.parse(await readFile(tokenizerPath, 'utf8')) as {
    model?: { vocab?: Record<string, number> | Array<[string, number]> };
    added_tokens?: Array<{ id: number }>;
  };
  const vocab = json.model?.vocab;
  const ids: number[] = Array.isArray(vocab)
    ? vocab.map((_, i) => i) // unigram: [piece, score] pairs, the id is the position
    : Object.values(vocab ?? {});
  for (const token of json.added_tokens ?? []) ids.push(token.id);
  return ids.reduce((m, id) => Math.max(m, id), -1);
}

async function configFor(
  shape: ModelShapeName | Record<string, unknown>,
  tokenizerFrom: string | undefined,
): Promise<{ raw: Record<string, unknown>; defaultDtype: RandomModelDtype }> {
  const base =
    typeof shape === 'string'
      ? { raw: { ...modelShape(shape).config }, defaultDtype: modelShape(shape).dtype }
      : { raw: { ...shape }, defaultDtype: 'F32' as const };
  if (tokenizerFrom === undefined) return base;
  const sourceConfigPath = join(tokenizerFrom, 'config.json');
  if (existsSync(sourceConfigPath)) {
    const source = JSON.parse(await readFile(sourceConfigPath, 'utf8')) as Record<string, unknown>;
    for (const key of TOKEN_ID_KEYS) {
      if (typeof source[key] === 'number') base.raw[key] = source[key];
      else delete base.raw[key];
    }
  }
  return base;
}

/**
 * Writes `dir` as a Hugging Face model directory with random weights at the shape named
 * `shape` (`MODEL_SHAPES`) or described by a config.json object. Returns what was written.
 */
export async function writeRandomModelDir(
  dir: string,
  shape: ModelShapeName | Record<string, unknown>,
  opts: RandomModelOptions = {},
): Promise<RandomModelSummary> {
  const { raw, defaultDtype } = await configFor(shape, opts.tokenizerFrom);
  const config = parseModelConfig(raw);
  const dtype = opts.dtype ?? defaultDtype;
  const gpt2 = config.modelType === 'gpt2';
  if (opts.tokenizerFrom !== undefined) {
    const tokenizerPath = join(opts.tokenizerFrom, 'tokenizer.json');
    const maxId = await maxTokenId(tokenizerPath);
    if (maxId >= config.vocabSize) {
      throw new Error(
        `${tokenizerPath} has token id ${maxId}, outside the shape's vocabulary of ${config.vocabSize}`,
      );
    }
  }
  raw.torch_dtype = dtype === 'BF16' ? 'bfloat16' : 'float32';

  const plan = tensorPlan(
    config,
    gpt2 ? (opts.gpt2Prefix ?? true) : true,
    gpt2 && opts.attnBiasBuffers === true,
  );
  const layout = buildSafetensorsHeader(
    plan.map((t) => ({ name: t.name, dtype, shape: t.shape })),
    { format: 'pt' },
  );
  const byName = new Map(plan.map((t) => [t.name, t]));

  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'config.json'), `${JSON.stringify(raw, null, 2)}\n`);
  const chunk =
    dtype === 'BF16' ? new Uint16Array(CHUNK_ELEMENTS) : new Float32Array(CHUNK_ELEMENTS);
  let parameters = 0;
  // Written to a temporary name and renamed last: a cache never holds a half-written file.
  const target = join(dir, 'model.safetensors');
  const partial = `${target}.partial`;
  const handle = await open(partial, 'w');
  try {
    await handle.write(layout.prefix);
    for (const entry of layout.entries) {
      const t = byName.get(entry.name)!;
      const count = t.shape.reduce((a, b) => a * b, 1);
      if (t.init !== 'causal-mask') parameters += count;
      const rng = new Xorshift32(deriveSeed(opts.seed ?? 0, t.name.replace(/^transformer\./, '')));
      for (let start = 0; start < count; start += CHUNK_ELEMENTS) {
        const n = Math.min(CHUNK_ELEMENTS, count - start);
        const view = chunk.subarray(0, n);
        fillChunk(view, t, start, rng);
        await handle.write(littleEndianBytes(view, n));
      }
    }
  } finally {
    await handle.close();
  }
  await rename(partial, target);

  if (opts.tokenizerFrom !== undefined) {
    for (const name of TOKENIZER_FILES) {
      const from = join(opts.tokenizerFrom, name);
      if (existsSync(from)) await copyFile(from, join(dir, name));
    }
  }
  return {
    dir,
    config: raw,
    dtype,
    parameters,
    bytes: layout.prefix.length + layout.dataLength,
  };
}
