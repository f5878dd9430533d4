/**
 * Hugging Face model directories: `config.json` plus `model.safetensors` (or a sharded
 * `model.safetensors.index.json`). Keys may carry the `*ForCausalLM` prefix
 * (`transformer.` for GPT-2, `model.` for Llama) or not (a bare `GPT2Model` checkpoint such
 * as openai-community/gpt2); the model always uses the prefixed names internally.
 */
import { createHash } from 'node:crypto';
import { copyFile, mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import {
  MAX_HEADER_BYTES,
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensors,
  type SafetensorsHeader,
  type SafetensorsInput,
} from '../safetensors/safetensors.codec';
import { SeededRandom, deriveSeed } from '../util/rng.util';
import {
  weightShapeError,
  type CausalLM,
  type ParameterMode,
  type WeightSource,
} from './causal-lm.model';
import { Gpt2Model } from './gpt2.model';
import { LlamaModel } from './llama.model';
import { parseModelConfig, type ModelConfig } from './model.config';
import { ModelConfigError, ModelWeightsError } from './model.errors';

export interface LoadModelOptions {
  /** `lora` (default): frozen base weights. `full`: every weight is a trainable Variable. */
  mode?: ParameterMode;
}

/** Builds the architecture class for `config` from any weight source. */
export function buildCausalLM(
  config: ModelConfig,
  source: WeightSource,
  mode: ParameterMode = 'lora',
): CausalLM {
  switch (config.modelType) {
    case 'gpt2':
      return new Gpt2Model(config, source, mode);
    case 'llama':
      return new LlamaModel(config, source, mode);
  }
}

/** Initialises like transformers (`initializer_range` 0.02, norms 1, biases 0), seeded. */
export function createRandomCausalLM(
  config: ModelConfig,
  seed: number,
  opts: LoadModelOptions = {},
): CausalLM {
  const source: WeightSource = {
    read(key, shape, init) {
      const count = shape.reduce((a, b) => a * b, 1);
      if (init === 'zeros') return new Float32Array(count);
      if (init === 'ones') return new Float32Array(count).fill(1);
      // One stream per tensor: adding a layer does not reshuffle the others' values.
      return new SeededRandom(deriveSeed(seed, key)).normal(count, 0.02);
    },
  };
  return buildCausalLM(config, source, opts.mode ?? 'lora');
}

/** Weight source over decoded checkpoint tensors that tracks which keys were used. */
class CheckpointWeightSource implements WeightSource {
  private readonly used = new Set<string>();

  constructor(
    private readonly tensors: Map<string, { shape: number[]; data: Float32Array }>,
    private readonly modelType: ModelConfig['modelType'],
  ) {}

  read(key: string, hfShape: number[]): Float32Array {
    const found = this.aliases(key).find((k) => this.tensors.has(k));
    if (found === undefined) {
      throw new ModelWeightsError(
        `checkpoint has no tensor "${key}" (nor an unprefixed alias)`,
        key,
      );
    }
    const tensor = this.tensors.get(found)!;
    if (tensor.shape.length !== hfShape.length || tensor.shape.some((d, i) => d !== hfShape[i])) {
      throw weightShapeError(found, hfShape, tensor.shape);
    }
    this.used.add(found);
    return tensor.data;
  }

  /** Rejects weights the model did not consume: they mean the config does not fit the file. */
  assertAllUsed(config: ModelConfig): void {
    const unexpected = [...this.tensors.keys()].filter(
      (k) => !this.used.has(k) && !this.isIgnorable(k, config),
    );
    if (unexpected.length > 0) {
      const shown = unexpected.slice(0, 5).join(', ');
      throw new ModelWeightsError(
        `checkpoint has ${unexpected.length} tensor(s) the ${config.modelType} config does not use: ${shown}`,
        unexpected[0],
      );
    }
  }

  private aliases(key: string): string[] {
    const prefix = this.modelType === 'gpt2' ? 'transformer.' : 'model.';
    return key.startsWith(prefix) ? [key, key.slice(prefix.length)] : [key];
  }

  private isIgnorable(key: string, config: ModelConfig): boolean {
    // Non-parameter buffers older transformers versions saved, and the duplicate of a tied head.
    if (/(^|\.)attn\.(bias|masked_bias)$/.test(key)) return true;
    if (key.endsWith('rotary_emb.inv_freq')) return true;
    return key === 'lm_head.weight' && config.tieWordEmbeddings;
  }
}

async function readJson(path: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new ModelConfigError(`cannot read ${what} at ${path}: ${(error as Error).message}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new ModelConfigError(`${what} at ${path} is not valid JSON: ${(error as Error).message}`);
  }
}

/** Reads and parses `<dir>/config.json` (no weights touched). */
export async function readModelConfig(dir: string): Promise<ModelConfig> {
  return parseModelConfig(await readJson(join(dir, 'config.json'), 'config.json'));
}

/** Lists the safetensors files of a model directory, sharded or not. */
async function weightFiles(dir: string): Promise<string[]> {
  const single = join(dir, 'model.safetensors');
  if (existsSync(single)) return [single];
  const indexPath = join(dir, 'model.safetensors.index.json');
  if (!existsSync(indexPath)) {
    throw new ModelWeightsError(
      `${dir} has neither model.safetensors nor model.safetensors.index.json`,
    );
  }
  const index = await readJson(indexPath, 'model.safetensors.index.json');
  const weightMap = (index as { weight_map?: unknown }).weight_map;
  if (typeof weightMap !== 'object' || weightMap === null) {
    throw new ModelWeightsError(`${indexPath} has no weight_map`);
  }
  const files = new Set(Object.values(weightMap as Record<string, unknown>).map(String));
  return [...files].sort().map((f) => join(dir, f));
}

/** Whether BF16/F16 checkpoints stay in half precision on the host once loaded. */
const HALF_PRECISION_WEIGHTS_KEPT = false;

/** Reads and validates one safetensors file's header from disk, without its data. */
export async function readSafetensorsFileHeader(path: string): Promise<SafetensorsHeader> {
  const handle = await open(path, 'r');
  try {
    const { size } = await handle.stat();
    const prefix = Buffer.alloc(8);
    await handle.read(prefix, 0, 8, 0);
    const length = Number(prefix.readBigUInt64LE(0));
    if (size < 8 || length > MAX_HEADER_BYTES || 8 + length > size) {
      // The codec produces the precise error for each of these cases.
      return readSafetensorsHeader(new Uint8Array(await readFile(path)));
    }
    const head = Buffer.alloc(8 + length);
    await handle.read(head, 0, 8 + length, 0);
    return readSafetensorsHeader(new Uint8Array(head.buffer, head.byteOffset, head.length), size);
  } finally {
    await handle.close();
  }
}

/**
 * Bytes per parameter the frozen weights of this directory take once loaded: 2 when every
 * floating-point weight is stored as BF16/F16 (kept as stored, upcast per product), else 4.
 */
export async function storedWeightBytesPerParameter(dir: string): Promise<number> {
  let halfOnly = true;
  for (const file of await weightFiles(dir)) {
    const header = await readSafetensorsFileHeader(file);
    for (const info of header.tensors.values()) {
      if (info.dtype !== 'BF16' && info.dtype !== 'F16') halfOnly = false;
    }
  }
  return halfOnly && HALF_PRECISION_WEIGHTS_KEPT ? 2 : 4;
}

/**
 * Loads a Hugging Face model directory. The sha256 of the weight bytes (files in sorted
 * order) is recorded as `baseModelSha256` for lineage.
 */
export async function loadCausalLM(dir: string, opts: LoadModelOptions = {}): Promise<CausalLM> {
  const config = await readModelConfig(dir);
  const hash = createHash('sha256');
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const file of await weightFiles(dir)) {
    const bytes = await readFile(file);
    hash.update(bytes);
    for (const [name, tensor] of readSafetensors(bytes).tensors) {
      if (tensors.has(name))
        throw new ModelWeightsError(`tensor "${name}" appears in more than one shard`, name);
      tensors.set(name, tensor);
    }
  }
  const source = new CheckpointWeightSource(tensors, config.modelType);
  const model = buildCausalLM(config, source, opts.mode ?? 'lora');
  try {
    source.assertAllUsed(config);
  } catch (error) {
    model.dispose();
    throw error;
  }
  model.baseModelSha256 = hash.digest('hex');
  return model;
}

/**
 * The model's current base weights under canonical keys, in Hugging Face layout. Reads each
 * tensor with `await data()`: webgpu has no synchronous read (`dataSync` throws there), and
 * `lorafleet merge` must run on every backend.
 */
export async function hfStateDict(model: CausalLM): Promise<Map<string, SafetensorsInput>> {
  const out = new Map<string, SafetensorsInput>();
  for (const p of model.baseParameters())
    out.set(p.key, { shape: p.hfShape, data: await p.read() });
  return out;
}

/** Tokenizer and generation files copied beside an exported model when present. */
const COMPANION_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'generation_config.json',
  'vocab.json',
  'merges.txt',
  'tokenizer.model',
  'added_tokens.json',
];

export interface SaveModelOptions {
  /** Directory to copy tokenizer/generation files from (usually the base model's). */
  companionsFrom?: string;
}

/**
 * Writes the model's current base weights (including any merged adapter) as a Hugging Face
 * directory that transformers' `from_pretrained` loads: config.json, model.safetensors with
 * `*ForCausalLM` keys and metadata `{"format":"pt"}`, and the companion files.
 */
export async function saveHfModel(
  model: CausalLM,
  outDir: string,
  opts: SaveModelOptions = {},
): Promise<void> {
  await mkdir(outDir, { recursive: true });
  await writeFile(join(outDir, 'config.json'), `${JSON.stringify(model.config.raw, null, 2)}\n`);
  await writeFile(
    join(outDir, 'model.safetensors'),
    writeSafetensors(await hfStateDict(model), { format: 'pt' }),
  );
  if (opts.companionsFrom) {
    for (const name of COMPANION_FILES) {
      const from = join(opts.companionsFrom, name);
      if (existsSync(from)) await copyFile(from, join(outDir, name));
    }
  }
}
