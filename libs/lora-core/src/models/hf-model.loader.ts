/**
 * Hugging Face model directories: `config.json` plus `model.safetensors` (or a sharded
 * `model.safetensors.index.json`). Keys may carry the `*ForCausalLM` prefix
 * (`transformer.` for GPT-2, `model.` for Llama) or not (a bare `GPT2Model` checkpoint such
 * as openai-community/gpt2); the model always uses the prefixed names internally.
 */
import { createHash } from 'node:crypto';
import { copyFile, mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { closeSync, openSync, readSync } from 'node:fs';
import { isAbsolute, join, resolve, sep } from 'node:path';

import {
  MAX_HEADER_BYTES,
  readSafetensorsHeader,
  writeSafetensors,
  type SafetensorsHeader,
  type SafetensorsTensorInfo,
  type SafetensorsInput,
} from '../safetensors/safetensors.codec';
import {
  DTYPE_BYTES,
  decodeToFloat32,
  isReadableDtype,
  type ReadableDtype,
} from '../safetensors/dtype.util';
import { describeValueAt, indexOfNonFinite } from '../util/finite.util';
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
    case 'mistral':
    case 'qwen2':
    case 'qwen3':
    case 'phi3':
    case 'gemma2':
      // One decoder; the family's differences are options of its config (model.config.ts).
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
    private readonly tensors: Map<string, { shape: number[]; data?: Float32Array }>,
    private readonly modelType: ModelConfig['modelType'],
  ) {}

  /** The tensor's values; subclasses read them on demand. */
  protected data(name: string): Float32Array {
    return this.tensors.get(name)!.data!;
  }

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
    const data = this.data(found);
    // A NaN or infinite weight would surface much later as null logits or a "diverged" run
    // that no learning rate fixes; one pass over each tensor as it is read names it here.
    const bad = indexOfNonFinite(data);
    if (bad >= 0) {
      throw new ModelWeightsError(
        `tensor "${found}" holds a non-finite value (${describeValueAt(data, bad)}): the weights are corrupt`,
        found,
      );
    }
    return data;
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
  const root = resolve(dir);
  return [...files].sort().map((file) => {
    // A shard must be a file of the model directory: a crafted index must not make the
    // loader open and parse anything else (e.g. "../../etc/passwd").
    const path = resolve(root, file);
    if (isAbsolute(file) || !path.startsWith(root + sep)) {
      throw new ModelWeightsError(`${indexPath}: shard "${file}" is outside the model directory`);
    }
    return path;
  });
}

/** Reads and validates one safetensors file's header from disk, without its data. */
export async function readSafetensorsFileHeader(path: string): Promise<SafetensorsHeader> {
  const handle = await open(path, 'r');
  try {
    const { size } = await handle.stat();
    const prefix = Buffer.alloc(8);
    await handle.read(prefix, 0, 8, 0);
    const length = Number(prefix.readBigUInt64LE(0));
    if (size < 8 || length > MAX_HEADER_BYTES || 8 + length > size) {
      // The codec produces the precise error for each case from what there is (≤ 100 MB).
      const available = Buffer.alloc(
        size < 8 || length > MAX_HEADER_BYTES ? Math.min(size, 8) : size,
      );
      await handle.read(available, 0, available.length, 0);
      return readSafetensorsHeader(
        new Uint8Array(available.buffer, available.byteOffset, available.length),
      );
    }
    const head = Buffer.alloc(8 + length);
    await handle.read(head, 0, 8 + length, 0);
    return readSafetensorsHeader(new Uint8Array(head.buffer, head.byteOffset, head.length), size);
  } finally {
    await handle.close();
  }
}

/**
 * Loads a Hugging Face model directory. The sha256 of the weight bytes (files in sorted
 * order) is recorded as `baseModelSha256` for lineage.
 */
export async function loadCausalLM(dir: string, opts: LoadModelOptions = {}): Promise<CausalLM> {
  const config = await readModelConfig(dir);
  const files = await weightFiles(dir);
  const hash = createHash('sha256');
  for (const file of files) await hashFile(file, hash);
  const source = await StreamingWeightSource.open(files, config.modelType);
  try {
    const model = buildCausalLM(config, source, opts.mode ?? 'lora');
    try {
      source.assertAllUsed(config);
    } catch (error) {
      model.dispose();
      throw error;
    }
    model.baseModelSha256 = hash.digest('hex');
    return model;
  } finally {
    source.close();
  }
}

/** Streams a file through `hash` in 16 MiB reads (a checkpoint can exceed Node's 2 GiB readFile limit). */
async function hashFile(path: string, hash: ReturnType<typeof createHash>): Promise<void> {
  const handle = await open(path, 'r');
  try {
    const chunk = Buffer.alloc(16 * 1024 * 1024);
    for (;;) {
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, null);
      if (bytesRead === 0) break;
      hash.update(chunk.subarray(0, bytesRead));
    }
  } finally {
    await handle.close();
  }
}

/**
 * Weight source that reads each tensor from disk when the model asks for it: the checkpoint
 * is never held whole, so loading needs the model's own memory plus one tensor (F32 reads
 * straight into the tensor's array; BF16/F16 through one transient buffer).
 */
class StreamingWeightSource extends CheckpointWeightSource {
  private constructor(
    private readonly entries: Map<
      string,
      { fd: number; dataStart: number; info: SafetensorsTensorInfo }
    >,
    private readonly fds: number[],
    modelType: ModelConfig['modelType'],
  ) {
    super(new Map([...entries].map(([name, e]) => [name, { shape: e.info.shape }])), modelType);
  }

  static async open(
    files: readonly string[],
    modelType: ModelConfig['modelType'],
  ): Promise<StreamingWeightSource> {
    const entries = new Map<
      string,
      { fd: number; dataStart: number; info: SafetensorsTensorInfo }
    >();
    const fds: number[] = [];
    try {
      for (const file of files) {
        const header = await readSafetensorsFileHeader(file);
        const fd = openSync(file, 'r');
        fds.push(fd);
        for (const [name, info] of header.tensors) {
          if (entries.has(name)) {
            throw new ModelWeightsError(`tensor "${name}" appears in more than one shard`, name);
          }
          if (!isReadableDtype(info.dtype)) {
            throw new ModelWeightsError(
              `tensor "${name}" has dtype ${info.dtype}; only F32, F16, BF16 and F64 are read`,
              name,
            );
          }
          entries.set(name, { fd, dataStart: header.dataStart, info });
        }
      }
    } catch (error) {
      for (const fd of fds) closeSync(fd);
      throw error;
    }
    return new StreamingWeightSource(entries, fds, modelType);
  }

  protected override data(name: string): Float32Array {
    const { fd, dataStart, info } = this.entries.get(name)!;
    const [begin, end] = info.dataOffsets;
    const count = (end - begin) / DTYPE_BYTES[info.dtype];
    const position = dataStart + begin;
    if (info.dtype === 'F32' && IS_LITTLE_ENDIAN) {
      const out = new Float32Array(count);
      readFully(fd, new Uint8Array(out.buffer), position);
      return out;
    }
    const bytes = new Uint8Array(end - begin);
    readFully(fd, bytes, position);
    return decodeToFloat32(bytes, 0, count, info.dtype as ReadableDtype);
  }

  close(): void {
    for (const fd of this.fds.splice(0)) closeSync(fd);
  }
}

const IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** readSync until `target` is full (a single read may return fewer bytes, e.g. past 2 GiB). */
function readFully(fd: number, target: Uint8Array, position: number): void {
  let done = 0;
  while (done < target.length) {
    const chunk = Math.min(target.length - done, 1024 * 1024 * 1024);
    const read = readSync(fd, target, done, chunk, position + done);
    if (read === 0)
      throw new ModelWeightsError(`weights file ends early (truncated at byte ${position + done})`);
    done += read;
  }
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
