/**
 * Checkpoint blobs: self-describing contents, bit-exact round trip, corruption detection,
 * and the directory store used by `lorafleet train --checkpoint-dir`.
 */
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import {
  CHECKPOINT_FORMAT,
  CheckpointError,
  decodeCheckpoint,
  encodeCheckpoint,
  initBackend,
  latestCheckpoint,
  listCheckpointFiles,
  pruneCheckpoints,
  readCheckpointState,
  readSafetensorsHeader,
  writeCheckpointFile,
} from '../src';
import { cAttnTrainer, tinyGpt2 } from './trainer.helpers';

async function trainedCheckpoint(): Promise<Uint8Array> {
  const model = tinyGpt2();
  const trainer = await cAttnTrainer(model, 3, {
    seed: 5,
    hyperparameters: { batch_size: 3, n_epochs: 2 },
  });
  await trainer.trainStep();
  await trainer.trainStep();
  await trainer.trainStep(); // 3 steps per epoch: the next epoch's order is in the blob
  await trainer.trainStep();
  const blob = trainer.checkpoint();
  trainer.dispose();
  model.dispose();
  return blob;
}

describe('checkpoint blobs', () => {
  let blob: Uint8Array;
  beforeAll(async () => {
    await initBackend('wasm');
    blob = await trainedCheckpoint();
  });

  it('is a safetensors file describing itself', () => {
    const header = readSafetensorsHeader(blob);
    expect(header.metadata).toEqual(
      expect.objectContaining({
        format: CHECKPOINT_FORMAT,
        version: '1',
        tensors_sha256: expect.stringMatching(/^[0-9a-f]{64}$/),
      }),
    );
    const names = [...header.tensors.keys()];
    expect(names).toContain('param/transformer.h.0.attn.c_attn.lora_A');
    expect(names).toContain('adamw.m/transformer.h.1.attn.c_attn.lora_B');
    expect(names).toContain('adamw.v/transformer.h.1.attn.c_attn.lora_B');
    const state = readCheckpointState(blob);
    expect(state).toEqual(
      expect.objectContaining({
        step: 4,
        epoch: 1,
        totalSteps: 6,
        stepsPerEpoch: 3,
        optimizer: expect.objectContaining({ type: 'adamw', iteration: 4 }),
        configSha256: expect.stringMatching(/^[0-9a-f]{64}$/),
        adapter: expect.objectContaining({ name: 'default' }),
      }),
    );
    expect(state.data.cursor).toBe(3);
    expect([...state.data.order].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(state.data.trainSha256).toMatch(/^[0-9a-f]{64}$/);
    expect(state.rng.seed).toBe(5);
    expect(state.metrics.map((m) => m.step)).toEqual([1, 2, 3, 4]);
    expect(state.lineage).toEqual(expect.objectContaining({ backend: 'wasm' }));
  });

  it('round-trips bit-exactly', () => {
    const decoded = decodeCheckpoint(blob);
    expect(Buffer.from(encodeCheckpoint(decoded)).equals(Buffer.from(blob))).toBe(true);
  });

  it('rejects corrupted, truncated and foreign blobs with CheckpointError', () => {
    const flipped = new Uint8Array(blob);
    flipped[flipped.length - 3] ^= 0x40; // a tensor byte
    expect(() => decodeCheckpoint(flipped)).toThrow(/recorded sha256/);
    expect(() => decodeCheckpoint(blob.subarray(0, blob.length - 10))).toThrow(CheckpointError);
    expect(() => decodeCheckpoint(new Uint8Array([1, 2, 3]))).toThrow(CheckpointError);
    const foreign = encodeCheckpoint(decodeCheckpoint(blob));
    const text = Buffer.from(foreign)
      .toString('latin1')
      .replace(CHECKPOINT_FORMAT, 'someone.else.ckpt!!!');
    expect(() => decodeCheckpoint(Buffer.from(text, 'latin1'))).toThrow(
      /not a lorafleet checkpoint/,
    );
  });
});

describe('checkpoint directory store', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lorafleet-ckpt-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes atomically, finds the newest valid one, skips torn files, prunes', async () => {
    const blob = await trainedCheckpoint();
    await writeCheckpointFile(dir, 4, blob);
    await writeCheckpointFile(dir, 2, blob);
    // A newer, corrupt file (e.g. a disk error): skipped with a reason.
    await writeFile(join(dir, 'checkpoint-00000009.lfckpt'), blob.subarray(0, 100));
    await writeFile(join(dir, 'checkpoint-00000010.lfckpt.tmp-123'), blob); // a torn temp file
    expect((await listCheckpointFiles(dir)).map((f) => f.step)).toEqual([2, 4, 9]);
    const skipped: string[] = [];
    const latest = await latestCheckpoint(dir, (path) => skipped.push(path));
    expect(latest?.path).toBe(join(dir, 'checkpoint-00000004.lfckpt'));
    expect(latest?.state.step).toBe(4);
    expect(skipped).toEqual([join(dir, 'checkpoint-00000009.lfckpt')]);
    await pruneCheckpoints(dir, 1);
    expect((await readdir(dir)).filter((n) => n.endsWith('.lfckpt'))).toEqual([
      'checkpoint-00000009.lfckpt',
    ]);
    expect(await latestCheckpoint(join(dir, 'missing'))).toBeNull();
  });
});
