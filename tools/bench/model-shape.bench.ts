/**
 * `npm run bench:train -- --model-shape gpt2-small|smollm2-135m|llama-0.5b|llama-1b
 *   [--backends auto,wasm-blas,...] [--steps N] [--batch-size B] [--dtype F32|BF16]
 *   [--torch-threads 1,2 | --no-torch] [--timeout-s S] [--no-build] [--json] [--smoke]`
 * (issue 13).
 *
 * Training at real model shapes, as a user runs it: the random-weight model directory is
 * written once into `.lorafleet/bench-models/` (`writeRandomModelDir`; GPT-2 with the
 * `transformer.` prefix and `attn.bias` buffers of the hub's checkpoints), then every
 * backend runs the product command `lorafleet train` in a child process of its own (a
 * process's peak RSS only grows), polled every 100 ms for VmHWM. Tokens/s are read from the
 * run's `training_metrics.csv`, warm-up steps excluded. The PyTorch reference
 * (tools/reference/bench_shapes.py) trains the same shape in the same run, once per thread
 * count in its own process; ratios are against its best thread count.
 * A backend whose child fails (an `Aborted()`, the memory pre-flight's refusal, a signal)
 * gets the first line of its error in the table; the bench goes on.
 * --smoke swaps in a tiny model of the same architecture (seq 64), well under a minute.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';

import { encodeExample, loadTokenizer } from '@lorafleet/data';
import {
  countBaseParameters,
  modelShape,
  parseModelConfig,
  writeRandomModelDir,
  type ModelShape,
  type RandomModelDtype,
} from '@lorafleet/lora-core';

export interface ShapeBenchOptions {
  root: string;
  shape: string;
  backends: string[];
  /** Timed steps after the warm-up step. */
  steps: number;
  smoke: boolean;
  json: boolean;
  batchSize?: number;
  dtype?: RandomModelDtype;
  torchThreads: number[];
  build: boolean;
  timeoutSeconds: number;
  log: (message: string) => void;
}

/** Tiny stand-ins for --smoke: the architecture of the named shape, nothing of its size. */
const SMOKE_SHAPES: Record<'gpt2' | 'llama', ModelShape> = {
  gpt2: {
    reference: 'smoke (GPT-2 architecture)',
    config: {
      model_type: 'gpt2',
      vocab_size: 512,
      n_embd: 64,
      n_layer: 2,
      n_head: 2,
      n_positions: 128,
      tie_word_embeddings: true,
    },
    dtype: 'F32',
    lora: { r: 8, targetModules: ['c_attn'] },
    batchSize: 2,
    seqLength: 64,
  },
  llama: {
    reference: 'smoke (Llama architecture)',
    config: {
      model_type: 'llama',
      vocab_size: 2048,
      hidden_size: 64,
      intermediate_size: 128,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      max_position_embeddings: 128,
      tie_word_embeddings: true,
    },
    dtype: 'BF16',
    lora: { r: 8, targetModules: ['q_proj', 'v_proj'] },
    batchSize: 2,
    seqLength: 64,
  },
};

const WARMUP_STEPS = 1;
const POLL_MS = 100;
/** Bumped when the writer's output changes, so cached model directories are rewritten. */
const CACHE_VERSION = 1;

interface ChildRun {
  backend: string;
  ok: boolean;
  /** The backend the CLI reported using (`auto` resolves to one). */
  backendUsed?: string;
  tokensPerSecond?: number;
  firstStepTokensPerSecond?: number;
  peakRssMb: number;
  wallSeconds: number;
  error?: string;
}

interface TorchRun {
  threads: number;
  ok: boolean;
  tokensPerSecond?: number;
  stepMs?: number;
  peakRssMb?: number;
  torchVersion?: string;
  error?: string;
}

/** Peak and current RSS of a live process, from /proc (kB → MB); null once it is gone. */
async function procMemory(pid: number): Promise<{ hwmMb: number; rssMb: number } | null> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const field = (name: string) =>
      Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
    return { hwmMb: field('VmHWM') / 1024, rssMb: field('VmRSS') / 1024 };
  } catch {
    return null;
  }
}

/** The line of a failed child's output that says why: its `error:` line, else the last one. */
function errorLine(output: string): string {
  const lines = output
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  const line =
    lines.find((l) => /^error\b/i.test(l)) ??
    lines.find((l) => /Error\b|Aborted\(|out of memory|Killed/.test(l)) ??
    lines[lines.length - 1] ??
    '(no output)';
  return line.length > 200 ? `${line.slice(0, 197)}...` : line;
}

/** Runs a command, sampling its memory; stdout and stderr are kept (the last 64 KiB). */
async function runSampled(
  command: string,
  args: string[],
  timeoutSeconds: number,
): Promise<{
  code: number | null;
  signal: string | null;
  output: string;
  peakRssMb: number;
  seconds: number;
}> {
  const started = performance.now();
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-65536);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let peak = 0;
  const sample = async () => {
    const mem = child.pid === undefined ? null : await procMemory(child.pid);
    if (mem) peak = Math.max(peak, mem.hwmMb, mem.rssMb);
  };
  const timer = setInterval(() => void sample(), POLL_MS);
  const killer = setTimeout(() => child.kill('SIGKILL'), timeoutSeconds * 1000);
  const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => {
    child.on('error', (error) => {
      output += `\nerror: ${error.message}`;
      resolve([null, null]);
    });
    child.on('close', (c, s) => resolve([c, s]));
  });
  clearInterval(timer);
  clearTimeout(killer);
  return { code, signal, output, peakRssMb: peak, seconds: (performance.now() - started) / 1000 };
}

/** Σ tokens / Σ seconds over the steps after the warm-up, and the first step's rate. */
function metricsTokensPerSecond(csv: string): { timed?: number; first?: number } {
  const [header, ...rows] = csv.trim().split('\n');
  const columns = header.split(',');
  const at = (row: string[], name: string) => Number(row[columns.indexOf(name)]);
  const parsed = rows.map((r) => r.split(','));
  const timed = parsed.filter(
    (r) => at(r, 'step') > WARMUP_STEPS && at(r, 'tokens_per_second') > 0,
  );
  const tokens = timed.reduce((n, r) => n + at(r, 'tokens'), 0);
  const seconds = timed.reduce((n, r) => n + at(r, 'tokens') / at(r, 'tokens_per_second'), 0);
  return {
    timed: seconds > 0 ? tokens / seconds : undefined,
    first: parsed.length > 0 ? at(parsed[0], 'tokens_per_second') : undefined,
  };
}

/** Writes the model directory unless the cache already holds the same one. */
async function ensureModelDir(
  root: string,
  cacheName: string,
  shape: ModelShape,
  dtype: RandomModelDtype,
  log: (message: string) => void,
): Promise<string> {
  const dir = join(root, '.lorafleet', 'bench-models', cacheName);
  const gpt2 = shape.config.model_type === 'gpt2';
  const options = {
    seed: 0,
    dtype,
    tokenizerFrom: join(root, 'models', gpt2 ? 'tiny-random-gpt2' : 'lorafleet-tiny-llama'),
    gpt2Prefix: true,
    attnBiasBuffers: gpt2,
  };
  const stamp = JSON.stringify({
    version: CACHE_VERSION,
    config: shape.config,
    options: { ...options, tokenizerFrom: undefined },
  });
  const stampPath = join(dir, 'bench-model.json');
  if (existsSync(stampPath) && (await readFile(stampPath, 'utf8')) === stamp) {
    log(`model ${dir} (cached)`);
    return dir;
  }
  log(`writing random ${dtype} weights to ${dir}...`);
  const started = performance.now();
  const written = await writeRandomModelDir(dir, shape.config, options);
  await writeFile(stampPath, stamp); // last: a stamp means a complete directory
  log(
    `wrote ${(written.parameters / 1e6).toFixed(1)}M parameters, ${(written.bytes / 2 ** 20).toFixed(0)} MiB in ${((performance.now() - started) / 1000).toFixed(1)} s`,
  );
  return dir;
}

/**
 * Training data where every example fills the sequence: a short prompt and a completion of
 * at least `seqLength` tokens, so `--max-seq-length` cuts each row to exactly `seqLength`
 * tokens, nearly all of them trained. Returns the prompt's token count (no loss there).
 */
async function writeTrainingData(
  modelDir: string,
  path: string,
  examples: number,
  seqLength: number,
): Promise<number> {
  const tokenizer = await loadTokenizer(modelDir);
  const words = [
    'the',
    'river',
    'carried',
    'seven',
    'boats',
    'past',
    'a',
    'quiet',
    'town',
    'while',
    'children',
    'counted',
    'stars',
    'and',
    'bells',
    'rang',
  ];
  const lines: string[] = [];
  let promptTokens = 0;
  for (let i = 0; i < examples; i++) {
    const prompt = `Story ${i}:`;
    let length = seqLength;
    for (;;) {
      const completion = ` ${Array.from({ length }, (_, k) => words[(k * 7 + i * 3 + (k >> 3)) % words.length]).join(' ')}`;
      const example = { format: 'prompt_completion' as const, prompt, completion };
      const { inputIds, lossMask } = encodeExample(example, tokenizer);
      if (inputIds.length >= seqLength) {
        promptTokens = Math.max(
          promptTokens,
          lossMask.slice(0, seqLength).filter((m) => m === 0).length,
        );
        lines.push(JSON.stringify({ prompt, completion }));
        break;
      }
      length *= 2;
    }
  }
  await writeFile(path, `${lines.join('\n')}\n`);
  return promptTokens;
}

async function runBackend(
  opts: ShapeBenchOptions,
  backend: string,
  modelDir: string,
  trainPath: string,
  work: string,
  shape: ModelShape,
  batchSize: number,
): Promise<ChildRun> {
  const out = join(work, `out-${backend}`);
  const cli = join(opts.root, 'apps', 'cli', 'dist', 'main.js');
  const args = [
    cli, 'train',
    '--model', modelDir,
    '--train', trainPath,
    '--out', out,
    '--max-seq-length', String(shape.seqLength),
    '--batch-size', String(batchSize),
    '--r', String(shape.lora.r),
    '--epochs', '1',
    '--max-steps', String(WARMUP_STEPS + opts.steps),
    ...(backend === 'auto' ? [] : ['--backend', backend]),
  ]; // prettier-ignore
  opts.log(`${backend}: node ${args.map((a) => a.replace(opts.root + '/', '')).join(' ')}`);
  const run = await runSampled(process.execPath, args, opts.timeoutSeconds);
  const base = { backend, peakRssMb: run.peakRssMb, wallSeconds: run.seconds };
  if (run.code !== 0) {
    const why = errorLine(run.output);
    return { ...base, ok: false, error: run.signal ? `killed by ${run.signal} (${why})` : why };
  }
  try {
    const csv = await readFile(join(out, 'training_metrics.csv'), 'utf8');
    const lineage = JSON.parse(await readFile(join(out, 'lorafleet.json'), 'utf8')) as {
      backend?: string;
    };
    const rates = metricsTokensPerSecond(csv);
    return {
      ...base,
      ok: rates.timed !== undefined,
      backendUsed: lineage.backend,
      tokensPerSecond: rates.timed,
      firstStepTokensPerSecond: rates.first,
      error:
        rates.timed === undefined
          ? 'no timed step after the warm-up in training_metrics.csv'
          : undefined,
    };
  } catch (error) {
    return { ...base, ok: false, error: `no metrics: ${(error as Error).message.split('\n')[0]}` };
  }
}

function runTorch(
  opts: ShapeBenchOptions,
  modelDir: string,
  shape: ModelShape,
  batchSize: number,
  promptTokens: number,
  threads: number,
): TorchRun {
  const result = spawnSync(
    '/usr/bin/python3',
    [
      join(opts.root, 'tools', 'reference', 'bench_shapes.py'),
      '--config', join(modelDir, 'config.json'),
      '--batch-size', String(batchSize),
      '--seq-len', String(shape.seqLength),
      '--prompt-tokens', String(promptTokens),
      '--r', String(shape.lora.r),
      '--targets', shape.lora.targetModules.join(','),
      '--steps', String(opts.steps),
      '--warmup', String(WARMUP_STEPS),
      '--threads', String(threads),
    ], // prettier-ignore
    { encoding: 'utf8', timeout: opts.timeoutSeconds * 1000 },
  );
  if (result.status !== 0) {
    return {
      threads,
      ok: false,
      error: errorLine(`${result.stderr ?? ''}\n${result.error?.message ?? ''}`),
    };
  }
  const parsed = JSON.parse(result.stdout.trim().split('\n').pop()!) as {
    tokens_per_second: number;
    step_ms: number;
    peak_rss_mb: number;
    threads: number;
    torch_version: string;
  };
  return {
    threads: parsed.threads,
    ok: true,
    tokensPerSecond: parsed.tokens_per_second,
    stepMs: parsed.step_ms,
    peakRssMb: parsed.peak_rss_mb,
    torchVersion: parsed.torch_version,
  };
}

const fmt = (value: number | undefined, digits = 0) =>
  value === undefined || !Number.isFinite(value)
    ? '—'
    : value.toLocaleString('en-US', {
        maximumFractionDigits: digits,
        minimumFractionDigits: digits,
      });

export async function runModelShapeBench(opts: ShapeBenchOptions): Promise<void> {
  const started = performance.now();
  const named = modelShape(opts.shape);
  if (opts.dtype !== undefined && opts.dtype !== 'F32' && opts.dtype !== 'BF16') {
    throw new Error(`--dtype must be F32 or BF16 (got ${String(opts.dtype)})`);
  }
  if (!Number.isInteger(opts.steps) || opts.steps < 1)
    throw new Error('--steps must be a positive integer');
  const arch = named.config.model_type === 'gpt2' ? 'gpt2' : 'llama';
  const shape = opts.smoke ? SMOKE_SHAPES[arch] : named;
  const dtype = opts.dtype ?? shape.dtype;
  const batchSize = opts.batchSize ?? shape.batchSize;
  const config = parseModelConfig(shape.config);
  const parameters = countBaseParameters(config);
  const cacheName = `${opts.smoke ? `smoke-${arch}` : opts.shape}-${dtype.toLowerCase()}`;
  opts.log(
    `shape ${opts.shape}${opts.smoke ? ` (smoke: tiny ${arch})` : ''}: ${(parameters / 1e6).toFixed(1)}M parameters, ${dtype}, ` +
      `seq ${shape.seqLength}, batch ${batchSize}, r=${shape.lora.r} on ${shape.lora.targetModules.join(',')}; ` +
      `${WARMUP_STEPS} warm-up + ${opts.steps} timed step(s)`,
  );

  if (opts.build) {
    opts.log('building the CLI (npx nx run cli:build)...');
    const build = spawnSync('npx', ['nx', 'run', 'cli:build'], {
      cwd: opts.root,
      stdio: ['ignore', 2, 2],
    });
    if (build.status !== 0)
      throw new Error('npx nx run cli:build failed (--no-build runs the existing apps/cli/dist)');
  }
  const modelDir = await ensureModelDir(opts.root, cacheName, shape, dtype, opts.log);
  const work = await mkdtemp(join(tmpdir(), 'bench-shape-'));
  try {
    const trainPath = join(work, 'train.jsonl');
    const promptTokens = await writeTrainingData(
      modelDir,
      trainPath,
      (WARMUP_STEPS + opts.steps) * batchSize,
      shape.seqLength,
    );

    // PyTorch first, one process per thread count; the tfjs children then run one at a time.
    const torchRuns: TorchRun[] = [];
    for (const threads of opts.torchThreads) {
      opts.log(`PyTorch reference, ${threads} thread(s)...`);
      const run = runTorch(opts, modelDir, shape, batchSize, promptTokens, threads);
      opts.log(
        run.ok
          ? `PyTorch ${threads} thread(s): ${fmt(run.tokensPerSecond)} tokens/s, peak RSS ${fmt(run.peakRssMb)} MB`
          : `PyTorch ${threads} thread(s) failed: ${run.error}`,
      );
      torchRuns.push(run);
    }
    const torch = torchRuns
      .filter((r) => r.ok)
      .reduce<TorchRun | null>(
        (best, r) => (best === null || r.tokensPerSecond! > best.tokensPerSecond! ? r : best),
        null,
      );

    const runs: ChildRun[] = [];
    for (const backend of opts.backends) {
      const run = await runBackend(opts, backend, modelDir, trainPath, work, shape, batchSize);
      opts.log(
        run.ok
          ? `${backend}: ${fmt(run.tokensPerSecond)} tokens/s, peak RSS ${fmt(run.peakRssMb)} MB (${run.backendUsed})`
          : `${backend}: failed after ${run.wallSeconds.toFixed(0)} s at ${fmt(run.peakRssMb)} MB: ${run.error}`,
      );
      runs.push(run);
    }

    const ratio = (a: number | undefined, b: number | undefined) =>
      a !== undefined && b ? a / b : undefined;
    const results = runs.map((r) => ({
      backend: r.backend,
      backend_used: r.backendUsed ?? null,
      ok: r.ok,
      tokens_per_second: r.tokensPerSecond ?? null,
      first_step_tokens_per_second: r.firstStepTokensPerSecond ?? null,
      peak_rss_mb: Math.round(r.peakRssMb),
      wall_s: Math.round(r.wallSeconds * 10) / 10,
      tokens_ratio_to_torch: r.ok
        ? (ratio(r.tokensPerSecond, torch?.tokensPerSecond) ?? null)
        : null,
      rss_ratio_to_torch: ratio(r.peakRssMb, torch?.peakRssMb) ?? null,
      error: r.error ?? null,
    }));
    const report = {
      shape: opts.shape,
      smoke: opts.smoke,
      reference: shape.reference,
      config: shape.config,
      parameters,
      dtype,
      seq_length: shape.seqLength,
      batch_size: batchSize,
      lora: shape.lora,
      warmup_steps: WARMUP_STEPS,
      timed_steps: opts.steps,
      model_dir: modelDir,
      torch: {
        runs: torchRuns.map((r) => ({
          threads: r.threads,
          ok: r.ok,
          tokens_per_second: r.tokensPerSecond ?? null,
          step_ms: r.stepMs ?? null,
          peak_rss_mb: r.peakRssMb === undefined ? null : Math.round(r.peakRssMb),
          error: r.error ?? null,
        })),
        best_threads: torch?.threads ?? null,
        version: torch?.torchVersion ?? null,
      },
      results,
      machine: {
        cpus: cpus().length,
        cpu_model: cpus()[0]?.model ?? 'unknown',
        memory_gb: Math.round(totalmem() / 2 ** 30),
        load_average_1m: loadavg()[0],
        node: process.version,
      },
      seconds: (performance.now() - started) / 1000,
    };
    if (opts.json) {
      process.stdout.write(`${JSON.stringify(report)}\n`);
      return;
    }
    const rows: string[][] = [
      ['backend', 'tokens/s', 'peak RSS MB', 'tokens/s vs PyTorch', 'RSS vs PyTorch'],
      ...torchRuns.map((r) => [
        `PyTorch ${r.torchVersion ?? ''}, ${r.threads} thread${r.threads === 1 ? '' : 's'}${r === torch ? ' (best)' : ''}`,
        ...(r.ok
          ? [
              fmt(r.tokensPerSecond),
              fmt(r.peakRssMb),
              `${fmt(ratio(r.tokensPerSecond, torch?.tokensPerSecond), 2)}×`,
              `${fmt(ratio(r.peakRssMb, torch?.peakRssMb), 2)}×`,
            ]
          : [`error: ${r.error}`]),
      ]),
      ...results.map((r) => [
        r.backend_used && r.backend_used !== r.backend
          ? `${r.backend} (${r.backend_used})`
          : r.backend,
        ...(r.ok
          ? [
              fmt(r.tokens_per_second ?? undefined),
              fmt(r.peak_rss_mb),
              `${fmt(r.tokens_ratio_to_torch ?? undefined, 2)}×`,
              `${fmt(r.rss_ratio_to_torch ?? undefined, 2)}×`,
            ]
          : [`failed at ${fmt(r.peak_rss_mb)} MB: ${r.error}`]),
      ]),
    ];
    const widths = rows[0].map((_, c) =>
      Math.max(...rows.filter((r) => r.length > 2).map((r) => (r[c] ?? '').length)),
    );
    const lines = [
      `model shape ${opts.shape}${opts.smoke ? ' (smoke)' : ''}: ${config.modelType}, ${(parameters / 1e6).toFixed(1)}M parameters, ${dtype}, ` +
        `seq ${shape.seqLength}, batch ${batchSize}, r=${shape.lora.r} on ${shape.lora.targetModules.join(',')}`,
      ...rows.map((r) =>
        r.length > 2
          ? r
              .map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c])))
              .join('  ')
          : `${r[0].padEnd(widths[0])}  ${r[1]}`,
      ),
      `(${WARMUP_STEPS} warm-up + ${opts.steps} timed steps; load average ${loadavg()[0].toFixed(2)}; ${cpus().length} CPUs)`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
