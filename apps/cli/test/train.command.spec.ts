/**
 * `lorafleet train | generate | eval`. The crash test runs the real CLI as a child process:
 * SIGKILL after a checkpoint, rerun with --resume, and the final adapter must be
 * byte-identical to an uninterrupted run (R5, R6). The CLI is bundled from source with
 * esbuild first, so the test never depends on a stale `dist/`.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { build } from 'esbuild';
import { TINY_PREFERENCE_JSONL } from '@lorafleet/testing';

import { main } from '../src/main';
import type { CliIo } from '../src/cli.io';

jest.setTimeout(180_000);

const ROOT = join(__dirname, '..', '..', '..');
const MODEL = join(ROOT, 'models', 'tiny-random-gpt2');
const PAIRS = [
  ['Say hi:', ' hi'],
  ['Say yes:', ' yes'],
  ['Say no:', ' no'],
  ['Say ok:', ' ok'],
  ['Color of the sky:', ' blue'],
  ['Call me:', ' Ishmael'],
  ['The quick brown:', ' fox'],
  ['Over the lazy:', ' dog'],
];
const JSONL = `${PAIRS.map(([prompt, completion]) => JSON.stringify({ prompt, completion })).join('\n')}\n`;

let scratch: string;
let bundle: string;
let trainFile: string;

async function run(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: CliIo = { out: (t) => (out += `${t}\n`), err: (t) => (err += `${t}\n`) };
  const code = await main(argv, io);
  return { code, out, err };
}

/** Flags shared by the interrupted and the uninterrupted runs: 64 steps, dropout on. */
function trainArgs(out: string, checkpoints: string): string[] {
  return [
    'train',
    '--model', MODEL,
    '--train', trainFile,
    '--out', out,
    '--epochs', '16',
    '--batch-size', '2',
    '--learning-rate', '1e-2',
    '--lr-scheduler', 'cosine',
    '--warmup-steps', '3',
    '--dropout', '0.1',
    '--target-modules', 'c_attn,c_fc',
    '--seed', '7',
    '--backend', 'wasm',
    '--checkpoint-dir', checkpoints,
    '--checkpoint-every', '1',
    '--checkpoint-keep', '2',
    '--quiet',
  ]; // prettier-ignore
}

function spawnCli(args: string[]) {
  const child = spawn(process.execPath, [bundle, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<{
    code: number | null;
    signal: NodeJS.Signals | null;
    output: string;
  }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, output })));
  return { child, exited };
}

const csvWithoutThroughput = (dir: string) =>
  readFileSync(join(dir, 'training_metrics.csv'), 'utf8')
    .trim()
    .split('\n')
    .map((line) => line.split(',').slice(0, -1).join(','));

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'lorafleet-train-cli-'));
  trainFile = join(scratch, 'train.jsonl');
  await writeFile(trainFile, JSONL);
  // Inside the repo so the bundle's require() finds node_modules; @lorafleet/* come from
  // source through the tsconfig paths.
  bundle = join(ROOT, 'node_modules', '.cache', `lorafleet-cli-test-${process.pid}.js`);
  await build({
    entryPoints: [join(ROOT, 'apps', 'cli', 'src', 'main.ts')],
    outfile: bundle,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    packages: 'external',
    tsconfig: join(ROOT, 'tsconfig.base.json'),
    logLevel: 'error',
  });
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
  await rm(bundle, { force: true });
});

describe('lorafleet train', () => {
  it('SIGKILL after a checkpoint, rerun with --resume: byte-identical adapter', async () => {
    const fullOut = join(scratch, 'full');
    const full = await spawnCli(trainArgs(fullOut, join(scratch, 'ck-full'))).exited;
    expect(full.output).not.toMatch(/error/);
    expect(full.code).toBe(0);

    const killedOut = join(scratch, 'killed');
    const checkpoints = join(scratch, 'ck-killed');
    const first = spawnCli(trainArgs(killedOut, checkpoints));
    // Kill as soon as the first checkpoint file lands (steps take tens of ms; 64 remain).
    for (;;) {
      const files = existsSync(checkpoints) ? await readdir(checkpoints) : [];
      if (files.some((f) => f.endsWith('.lfckpt'))) break;
      if (first.child.exitCode !== null) throw new Error('the run ended before it was killed');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    first.child.kill('SIGKILL');
    const killed = await first.exited;
    expect(killed.signal).toBe('SIGKILL');
    expect(existsSync(join(killedOut, 'adapter_model.safetensors'))).toBe(false);

    const resumed = await spawnCli([...trainArgs(killedOut, checkpoints), '--resume', '--force'])
      .exited;
    expect(resumed.code).toBe(0);
    expect(resumed.output).toMatch(/resuming from .*checkpoint-\d{8}\.lfckpt \(step \d+\/64\)/);
    const step = Number(/\(step (\d+)\/64\)/.exec(resumed.output)![1]);
    expect(step).toBeGreaterThanOrEqual(1);
    expect(step).toBeLessThan(64);

    const a = readFileSync(join(fullOut, 'adapter_model.safetensors'));
    const b = readFileSync(join(killedOut, 'adapter_model.safetensors'));
    expect(b.equals(a)).toBe(true);
    expect(csvWithoutThroughput(killedOut)).toEqual(csvWithoutThroughput(fullOut));
    const lineage = JSON.parse(readFileSync(join(killedOut, 'lorafleet.json'), 'utf8'));
    expect(lineage).toEqual(
      expect.objectContaining({
        base_model: 'tiny-random-gpt2',
        backend: 'wasm',
        resumed_from_step: step,
      }),
    );
    expect(lineage.base_model_sha256).toMatch(/^[0-9a-f]{64}$/);
    // --checkpoint-keep 2: older files were pruned.
    expect((await readdir(checkpoints)).filter((f) => f.endsWith('.lfckpt'))).toHaveLength(2);
  });

  it('generate and eval use the trained adapter; the adapter fits the data better than the base', async () => {
    const adapter = join(scratch, 'full');
    const base = await run(
      'eval',
      '--model',
      MODEL,
      '--data',
      trainFile,
      '--backend',
      'wasm',
      '--json',
    );
    const tuned = await run(
      'eval',
      '--model',
      MODEL,
      '--adapter',
      adapter,
      '--data',
      trainFile,
      '--backend',
      'wasm',
      '--json',
    );
    expect(base.code).toBe(0);
    expect(tuned.code).toBe(0);
    const [b, t] = [JSON.parse(base.out), JSON.parse(tuned.out)];
    expect(t.examples).toBe(8);
    expect(t.loss).toBeLessThan(b.loss);
    expect(t.perplexity).toBeCloseTo(Math.exp(t.loss), 6);

    const generated = await run(
      'generate', '--model', MODEL, '--adapter', adapter, '--prompt', 'Say hi:',
      '--max-new-tokens', '8', '--backend', 'wasm', '--json',
    ); // prettier-ignore
    expect(generated.code).toBe(0);
    const g = JSON.parse(generated.out);
    expect(g.completion_tokens).toBeGreaterThan(0);
    expect(['stop', 'length']).toContain(g.finish_reason);
    const sampled = await run(
      'generate', '--model', MODEL, '--prompt', 'Say hi:', '--temperature', '0.7', '--top-p', '0.9',
      '--seed', '3', '--max-new-tokens', '8', '--backend', 'wasm',
    ); // prettier-ignore
    expect(sampled.code).toBe(0);
  });

  it('LORAFLEET_BACKEND / --backend gpu without tfjs-node-gpu exits 1 naming the package (R17)', async () => {
    const result = await run(
      ...trainArgs(join(scratch, 'gpu'), join(scratch, 'ck-gpu')).slice(0, -1),
      '--backend',
      'gpu',
    );
    expect(result.code).toBe(1);
    expect(result.err).toContain('@tensorflow/tfjs-node-gpu');
  });

  it('rejects bad invocations with exit 2', async () => {
    const trainInto = (out: string, ...flags: string[]) =>
      run('train', '--model', MODEL, '--train', trainFile, '--out', join(scratch, out), ...flags);
    for (const cmd of ['train', 'generate', 'eval']) {
      const help = await run(cmd, '--help');
      expect(help.code).toBe(0);
      expect(help.out).toMatch(new RegExp(`^Usage: lorafleet ${cmd}`));
    }
    expect((await run('train', '--model', MODEL, '--train', trainFile)).err).toMatch(
      /--out is required/,
    );
    const resumeWithoutDir = await run(
      'train',
      '--model',
      MODEL,
      '--train',
      trainFile,
      '--out',
      join(scratch, 'x'),
      '--resume',
    );
    expect(resumeWithoutDir.code).toBe(2);
    const existing = await run(...trainArgs(join(scratch, 'y'), join(scratch, 'ck-full')));
    expect(existing.code).toBe(2);
    expect(existing.err).toMatch(/already holds checkpoints; pass --resume/);
    // The spec's own checks, as a REST job gets them: ranges and the model's context length.
    for (const [flags, message] of [
      [['--learning-rate', '2'], /training\.learning_rate: /],
      [
        ['--max-seq-length', '65'],
        /training\.max_seq_length 65 exceeds the context length of tiny-random-gpt2 \(64\)/,
      ],
    ] as const) {
      const bad = await trainInto('z', ...flags);
      expect({ code: bad.code, err: bad.err }).toEqual({
        code: 2,
        err: expect.stringMatching(message),
      });
    }
    expect((await run('generate', '--model', MODEL, '--prompt', 'x', '--top-p', '0')).code).toBe(2);
    expect((await trainInto('z', '--lr-scheduler', 'step')).code).toBe(2);
  });
});

describe('lorafleet train --method dpo (issue 20)', () => {
  it('trains on preference pairs with --beta and reports DPO metrics; wrong data or flags are refused', async () => {
    const pairsFile = join(scratch, 'pairs.jsonl');
    await writeFile(pairsFile, TINY_PREFERENCE_JSONL);
    const out = join(scratch, 'dpo-out');
    const trained = await run(
      'train',
      '--model', MODEL,
      '--train', pairsFile,
      '--validation', pairsFile,
      '--out', out,
      '--method', 'dpo',
      '--beta', '0.2',
      '--epochs', '2',
      '--batch-size', '2',
      '--learning-rate', '2e-2',
      '--seed', '3',
      '--backend', 'wasm',
    ); // prettier-ignore
    expect({ code: trained.code, err: trained.err }).toEqual({ code: 0, err: expect.any(String) });
    expect(trained.err).toMatch(/pre-flight: 4 examples/);
    expect(trained.err).toMatch(/margin -?\d+\.\d{4} reward acc \d+\.\d%/);
    expect(trained.out).toMatch(/validation DPO loss \d\.\d{4}, reward margin/);
    const lineage = JSON.parse(readFileSync(join(out, 'lorafleet.json'), 'utf8')) as {
      spec: { method: unknown };
    };
    expect(lineage.spec.method).toEqual({ type: 'dpo', beta: 0.2 });
    const csv = readFileSync(join(out, 'training_metrics.csv'), 'utf8').split('\n');
    expect(csv[0]).toMatch(/,train_rewards_chosen,train_rewards_rejected,train_rewards_margin,/);
    expect(csv.filter((line) => line !== '')).toHaveLength(1 + 4);
    expect(existsSync(join(out, 'adapter_model.safetensors'))).toBe(true);

    // SFT lines for a DPO run: exit 1 with the validator's line-numbered message.
    const sft = await run(
      'train', '--model', MODEL, '--train', trainFile, '--out', join(scratch, 'dpo-bad'),
      '--method', 'dpo', '--backend', 'wasm',
    ); // prettier-ignore
    expect(sft.code).toBe(1);
    expect(sft.err).toMatch(/line 1/);
    for (const [flags, message] of [
      [['--beta', '0.2'], /--beta needs --method dpo/],
      [['--method', 'ppo'], /--method must be supervised or dpo/],
      [['--method', 'dpo', '--beta', '0'], /--beta must be/],
    ] as const) {
      const bad = await run(
        'train', '--model', MODEL, '--train', pairsFile, '--out', join(scratch, 'dpo-bad'),
        ...flags,
      ); // prettier-ignore
      expect({ code: bad.code, err: bad.err }).toEqual({
        code: 2,
        err: expect.stringMatching(message),
      });
    }
  });
});

describe('lorafleet train pre-flight (issue 13)', () => {
  const withEnv = async <T>(value: string, body: () => Promise<T>): Promise<T> => {
    const before = process.env.LORAFLEET_MEMORY_LIMIT_MB;
    process.env.LORAFLEET_MEMORY_LIMIT_MB = value;
    try {
      return await body();
    } finally {
      if (before === undefined) delete process.env.LORAFLEET_MEMORY_LIMIT_MB;
      else process.env.LORAFLEET_MEMORY_LIMIT_MB = before;
    }
  };
  const quick = (out: string, ...extra: string[]) => [
    'train', '--model', MODEL, '--train', trainFile, '--out', join(scratch, out),
    '--max-steps', '1', '--batch-size', '2', '--backend', 'wasm', ...extra,
  ]; // prettier-ignore

  it('refuses a run over LORAFLEET_MEMORY_LIMIT_MB before step 1: exit 1, the estimate, the limit and what to change', async () => {
    const refused = await withEnv('1', () => run(...quick('mem-refused')));
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/needs about [\d,]+ MiB but the memory limit is 1 MiB/);
    expect(refused.err).toMatch(
      /To fit: turn on gradient checkpointing \(--gradient-checkpointing/,
    );
    expect(refused.err).toMatch(/lower the batch size \(now 2\)/);
    expect(existsSync(join(scratch, 'mem-refused', 'adapter_model.safetensors'))).toBe(false);

    const malformed = await withEnv('lots', () => run(...quick('mem-malformed')));
    expect(malformed.code).toBe(2);
    expect(malformed.err).toMatch(
      /LORAFLEET_MEMORY_LIMIT_MB="lots" must be a positive whole number/,
    );
  });

  it('trains with --gradient-checkpointing under a roomy limit and says so in the pre-flight line', async () => {
    const result = await withEnv('100000', () =>
      run(...quick('mem-ckpt', '--gradient-checkpointing')),
    );
    expect(result.code).toBe(0);
    expect(result.err).toMatch(
      /pre-flight: .*memory estimate [\d,]+ MiB of 100,000 MiB \(gradient checkpointing\)/,
    );
    const lineage = JSON.parse(readFileSync(join(scratch, 'mem-ckpt', 'lorafleet.json'), 'utf8'));
    expect(lineage.base_model).toBe('tiny-random-gpt2');
  });

  it('refuses data whose completions are all cut by --max-seq-length, and warns when over 20% lose some', async () => {
    const long = join(scratch, 'long.jsonl');
    const prompt = 'one two three four five six seven eight nine ten eleven twelve:';
    await writeFile(
      long,
      PAIRS.map(([p, c], i) => JSON.stringify({ prompt: i < 3 ? prompt : p, completion: c })).join(
        '\n',
      ),
    );
    // Every prompt longer than the smallest max_seq_length a spec allows (8).
    const allLong = join(scratch, 'all-long.jsonl');
    await writeFile(
      allLong,
      PAIRS.map(([, c]) => JSON.stringify({ prompt, completion: c })).join('\n'),
    );
    const nothing = await run(
      'train', '--model', MODEL, '--train', allLong, '--out', join(scratch, 'no-tokens'),
      '--max-seq-length', '8', '--backend', 'wasm',
    ); // prettier-ignore
    expect(nothing.code).toBe(1);
    expect(nothing.err).toMatch(
      /no example has a completion token left to train on at max_seq_length 8: 8 of 8 examples/,
    );
    expect(existsSync(join(scratch, 'no-tokens', 'adapter_model.safetensors'))).toBe(false);

    // 3 of 8 examples (38%) have a prompt longer than 40 tokens: their completions are cut.
    const warned = await run(
      'train', '--model', MODEL, '--train', long, '--out', join(scratch, 'warned'),
      '--max-seq-length', '40', '--max-steps', '1', '--backend', 'wasm', '--quiet',
    ); // prettier-ignore
    expect(warned.code).toBe(0);
    expect(warned.err).toMatch(
      /warning: 3 of 8 examples \(38%\) lose completion tokens to truncation at max_seq_length 40/,
    );
  });
});
