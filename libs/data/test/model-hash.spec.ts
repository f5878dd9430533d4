import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BaseModelHashError, hashBaseModel } from '../src';

const sha256 = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');

describe('hashBaseModel', () => {
  let dir: string;

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'lf-model-hash-'));
    writeFileSync(path.join(dir, 'config.json'), '{"model_type":"gpt2"}');
    writeFileSync(path.join(dir, 'model.safetensors'), Buffer.from([1, 2, 3, 4]));
    writeFileSync(path.join(dir, 'tokenizer.json'), '{}');
    writeFileSync(path.join(dir, 'README.md'), 'not hashed');
  });

  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('is the sha256 of a sorted manifest of config, weights and tokenizer file hashes', async () => {
    const hash = await hashBaseModel(dir);
    const names = ['config.json', 'model.safetensors', 'tokenizer.json'];
    const manifest = names
      .map((name) => `${name} ${sha256(readFileSync(path.join(dir, name)))}\n`)
      .join('');
    expect(hash.sha256).toBe(sha256(manifest));
    expect(hash.files.map((f) => f.name)).toEqual(names);
    expect(hash.files[1]).toEqual({
      name: 'model.safetensors',
      bytes: 4,
      sha256: sha256(Buffer.from([1, 2, 3, 4])),
    });
  });

  it('ignores files that do not shape training', async () => {
    const before = (await hashBaseModel(dir)).sha256;
    writeFileSync(path.join(dir, 'README.md'), 'edited');
    expect((await hashBaseModel(dir)).sha256).toBe(before);
  });

  it('sees an edit of the weights even when size and mtime are restored', async () => {
    const weights = path.join(dir, 'model.safetensors');
    const before = await hashBaseModel(dir);
    const { atime, mtime } = await stat(weights);
    writeFileSync(weights, Buffer.from([1, 2, 3, 5]));
    utimesSync(weights, atime, mtime);
    const after = await hashBaseModel(dir);
    expect(after.sha256).not.toBe(before.sha256);
    expect(after.files[1].sha256).toBe(sha256(Buffer.from([1, 2, 3, 5])));
  });

  it('sees an edited config', async () => {
    const before = (await hashBaseModel(dir)).sha256;
    writeFileSync(path.join(dir, 'config.json'), '{"model_type":"gpt2","n_layer":3}');
    expect((await hashBaseModel(dir)).sha256).not.toBe(before);
  });

  it('covers every shard named by a sharded index', async () => {
    rmSync(path.join(dir, 'model.safetensors'));
    writeFileSync(
      path.join(dir, 'model.safetensors.index.json'),
      JSON.stringify({
        weight_map: { a: 'model-00001.safetensors', b: 'model-00002.safetensors' },
      }),
    );
    writeFileSync(path.join(dir, 'model-00001.safetensors'), 'one');
    writeFileSync(path.join(dir, 'model-00002.safetensors'), 'two');
    const hash = await hashBaseModel(dir);
    expect(hash.files.map((f) => f.name)).toEqual([
      'config.json',
      'model-00001.safetensors',
      'model-00002.safetensors',
      'model.safetensors.index.json',
      'tokenizer.json',
    ]);
    rmSync(path.join(dir, 'model-00002.safetensors'));
    await expect(hashBaseModel(dir)).rejects.toThrow(/is missing model-00002.safetensors/);
  });

  it('refuses a shard name that leaves the directory', async () => {
    rmSync(path.join(dir, 'model.safetensors'));
    writeFileSync(
      path.join(dir, 'model.safetensors.index.json'),
      JSON.stringify({ weight_map: { a: '../outside.safetensors' } }),
    );
    await expect(hashBaseModel(dir)).rejects.toThrow(/invalid weight shard/);
  });

  it('fails clearly when the weights or the config are missing', async () => {
    rmSync(path.join(dir, 'model.safetensors'));
    await expect(hashBaseModel(dir)).rejects.toThrow(BaseModelHashError);
    await expect(hashBaseModel(dir)).rejects.toThrow(
      /neither model.safetensors nor model.safetensors.index.json/,
    );
    rmSync(path.join(dir, 'config.json'));
    await expect(hashBaseModel(dir)).rejects.toThrow(/has no config.json/);
  });

  it('shares one computation between concurrent callers', async () => {
    const [a, b] = await Promise.all([hashBaseModel(dir), hashBaseModel(dir)]);
    expect(a).toBe(b);
    expect(await hashBaseModel(dir)).toBe(a);
  });
});
