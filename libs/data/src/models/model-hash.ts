import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';

/** The base model directory lacks a file its hash covers (weights, config). */
export class BaseModelHashError extends Error {
  constructor(
    readonly dir: string,
    /** What is wrong, without the directory (safe to show a client). */
    readonly reason: string,
  ) {
    super(`Base model at ${dir} ${reason}`);
    this.name = 'BaseModelHashError';
  }
}

export interface BaseModelFileHash {
  /** Path relative to the model directory. */
  name: string;
  bytes: number;
  sha256: string;
}

export interface BaseModelHash {
  /**
   * sha256 of the manifest `"<name> <sha256 of the file>\n"` over the hashed files, sorted by
   * name: one digest that changes when any file that shapes training changes.
   */
  sha256: string;
  files: BaseModelFileHash[];
}

/** Optional files that shape training when present: the tokenizer and its chat template. */
const OPTIONAL_FILES = ['tokenizer.json', 'tokenizer_config.json'];

/**
 * The files a base model's hash covers, relative to `dir`: `config.json`, the weights
 * (`model.safetensors`, or `model.safetensors.index.json` and every shard it names) and, when
 * present, `tokenizer.json` and `tokenizer_config.json`.
 */
async function hashedFiles(dir: string): Promise<string[]> {
  if (!existsSync(path.join(dir, 'config.json'))) {
    throw new BaseModelHashError(dir, 'has no config.json');
  }
  const files = ['config.json'];
  if (existsSync(path.join(dir, 'model.safetensors'))) {
    files.push('model.safetensors');
  } else if (existsSync(path.join(dir, 'model.safetensors.index.json'))) {
    let index: unknown;
    try {
      index = JSON.parse(await readFile(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
    } catch (error) {
      throw new BaseModelHashError(
        dir,
        `has an unreadable model.safetensors.index.json: ${String(error)}`,
      );
    }
    const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
    if (typeof weightMap !== 'object' || weightMap === null) {
      throw new BaseModelHashError(dir, 'has a model.safetensors.index.json without weight_map');
    }
    const shards = new Set(Object.values(weightMap as Record<string, unknown>).map(String));
    for (const shard of shards) {
      // A shard name is a plain file name beside the index; anything else could escape dir.
      if (path.basename(shard) !== shard || shard.startsWith('.')) {
        throw new BaseModelHashError(dir, `names an invalid weight shard ${JSON.stringify(shard)}`);
      }
    }
    files.push('model.safetensors.index.json', ...shards);
  } else {
    throw new BaseModelHashError(
      dir,
      'has neither model.safetensors nor model.safetensors.index.json',
    );
  }
  for (const name of OPTIONAL_FILES) {
    if (existsSync(path.join(dir, name))) files.push(name);
  }
  return files.sort();
}

function sha256OfFile(file: string): Promise<{ sha256: string; bytes: number }> {
  // Streamed, so hashing gigabytes of weights never blocks the caller's event loop for long.
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    let bytes = 0;
    createReadStream(file)
      .on('data', (chunk: string | Buffer) => {
        bytes += Buffer.byteLength(chunk);
        hash.update(chunk);
      })
      .on('error', reject)
      .on('end', () => resolve({ sha256: hash.digest('hex'), bytes }));
  });
}

/**
 * What the cache trusts instead of re-reading a file: its inode, size, modification and
 * status-change times. Rewriting a file changes its ctime, which user space cannot set back,
 * so an edit is always seen even when the mtime is restored.
 */
async function fileSignature(dir: string, files: string[]): Promise<string> {
  const parts: string[] = [];
  for (const name of files) {
    let info;
    try {
      info = await stat(path.join(dir, name), { bigint: true });
    } catch {
      throw new BaseModelHashError(dir, `is missing ${name}`);
    }
    parts.push(`${name}:${info.ino}:${info.size}:${info.mtimeNs}:${info.ctimeNs}`);
  }
  return parts.join('|');
}

interface CacheEntry {
  signature: string;
  hash: Promise<BaseModelHash>;
}

const cache = new Map<string, CacheEntry>();

/**
 * The content hash of the base model in `dir` (see `BaseModelHash.sha256`). Computed once per
 * directory and reused while no covered file changed (same inode, size, mtime and ctime);
 * concurrent callers share one computation. Throws `BaseModelHashError` when a covered file is
 * missing.
 */
export async function hashBaseModel(dir: string): Promise<BaseModelHash> {
  const files = await hashedFiles(dir);
  const signature = await fileSignature(dir, files);
  const cached = cache.get(dir);
  if (cached && cached.signature === signature) return cached.hash;
  const hash = (async (): Promise<BaseModelHash> => {
    const hashes: BaseModelFileHash[] = [];
    for (const name of files) {
      try {
        hashes.push({ name, ...(await sha256OfFile(path.join(dir, name))) });
      } catch (error) {
        throw new BaseModelHashError(dir, `could not be read (${name}): ${String(error)}`);
      }
    }
    const manifest = hashes.map((f) => `${f.name} ${f.sha256}\n`).join('');
    return { sha256: createHash('sha256').update(manifest).digest('hex'), files: hashes };
  })();
  cache.set(dir, { signature, hash });
  try {
    return await hash;
  } catch (error) {
    if (cache.get(dir)?.hash === hash) cache.delete(dir);
    throw error;
  }
}
