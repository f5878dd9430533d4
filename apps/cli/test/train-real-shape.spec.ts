/**
 * Issue 13's CI check of the memory path: `lorafleet train` on a model at SmolLM2-135M's real
 * shape (hidden 576, 30 layers, GQA 9/3, vocabulary 49,152, tied, BF16 checkpoint), random
 * weights written locally, two steps at seq 64 and batch 1 on the default backend. It proves
 * the path a real model takes (streamed BF16 load, frozen weights in host memory on
 * wasm-blas, fused LM head), not the speed.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { writeRandomModelDir } from '@lorafleet/lora-core';

import { main } from '../src/main';
import type { CliIo } from '../src/cli.io';

jest.setTimeout(120_000);

let scratch: string;

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'lorafleet-real-shape-'));
});
afterAll(() => rm(scratch, { recursive: true, force: true }));

it('trains two steps of a smollm2-135m-shaped BF16 model on auto through the host-weight path', async () => {
  const model = join(scratch, 'smollm2-135m');
  await writeRandomModelDir(model, 'smollm2-135m', {
    seed: 1,
    dtype: 'BF16',
    // A shipped Llama tokenizer; its ids fit the 49,152-entry vocabulary.
    tokenizerFrom: join(__dirname, '..', '..', '..', 'models', 'lorafleet-tiny-llama'),
  });
  const lines = Array.from({ length: 4 }, (_, i) =>
    JSON.stringify({
      prompt: `Question ${i}: spell the word number ${i} backwards.`,
      completion: ` ${'abcdefghij'
        .slice(0, 4 + i)
        .split('')
        .reverse()
        .join(' ')} and that is all.`,
    }),
  );
  const trainFile = join(scratch, 'train.jsonl');
  await writeFile(trainFile, `${lines.join('\n')}\n`);
  const out = join(scratch, 'adapter');
  let stdout = '';
  let stderr = '';
  const io: CliIo = { out: (t) => (stdout += `${t}\n`), err: (t) => (stderr += `${t}\n`) };
  const code = await main(
    [
      'train',
      '--model', model,
      '--train', trainFile,
      '--out', out,
      '--max-seq-length', '64',
      '--batch-size', '1',
      '--max-steps', '2',
      '--r', '8',
    ], // prettier-ignore
    io,
  );
  expect({ code, stderr: code === 0 ? '' : stderr }).toEqual({ code: 0, stderr: '' });
  const output = stdout + stderr;
  // The default backend here is wasm-blas: weights outside the wasm heap.
  expect(output).toMatch(/wasm-blas/);
  // The pre-flight line carries the memory estimate.
  expect(output).toMatch(/memory[^\n]*MiB/i);
  const metrics = readFileSync(join(out, 'training_metrics.csv'), 'utf8').trim().split('\n');
  expect(metrics).toHaveLength(3); // header + 2 steps
  const losses = metrics.slice(1).map((line) => Number(line.split(',')[1]));
  for (const loss of losses) {
    expect(Number.isFinite(loss)).toBe(true);
    // A random model at vocabulary 49,152 starts near ln(49152) ≈ 10.8.
    expect(loss).toBeGreaterThan(5);
  }
  expect(existsSync(join(out, 'adapter_model.safetensors'))).toBe(true);
  const config = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8')) as {
    target_modules: string[];
    r: number;
  };
  expect({ r: config.r, targets: [...config.target_modules].sort() }).toEqual({
    r: 8,
    targets: ['q_proj', 'v_proj'],
  });
});
