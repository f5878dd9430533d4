/**
 * `npm run bench:train -- [--json] [--smoke] [--backends wasm-blas,wasm,cpu] [--steps N]`
 *
 * Training benchmark for lora-core (issue 4): figures, not a test.
 *  1. Tokens/s of one LoRA training step (forward, completion loss, backward, clipping, AdamW)
 *     on the reference config, on every backend that loads here, and the same step in
 *     PyTorch (tools/reference/bench_train.py) in the same run; the ratio to PyTorch.
 *  2. LoRA against full fine-tuning on the same model and backend: trainable parameters,
 *     optimizer-state bytes, step time.
 *  3. Inference with a merged adapter against the bare base: latency ratio (goal 1.00).
 *  4. Where a training step's time goes, per op type, on wasm-blas (else wasm) (tf.profile).
 * With --json, stdout is one JSON object (use `npm run -s` so npm adds no header); progress
 * goes to stderr. --smoke uses a small config and one timed step (well under a minute).
 * --no-stock skips the "wasm (stock matmul)" run. --profile-only <backend> only prints where one
 * step's time goes on that backend.
 * --model-shape <name> benchmarks a real model shape through the `lorafleet train` command
 * instead (issue 13; tools/bench/model-shape.bench.ts): the options above then do not apply.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { FineTuneSpec } from '@lorafleet/contracts';
import { resolveFineTuneSpec } from '@lorafleet/data';

import {
  KvCacheDecoder,
  Trainer,
  contextLength,
  createRandomCausalLM,
  initBackend,
  parseModelConfig,
  selectBackend,
  type CausalLM,
  type ParameterMode,
  type TokenizedSequence,
} from '@lorafleet/lora-core';

import { runModelShapeBench } from './model-shape.bench';

/** The benchmark's training spec: seed 1, learning rate 1e-4, every other setting default. */
function benchSpec(model: CausalLM, batchSize: number, epochs: number): FineTuneSpec {
  return resolveFineTuneSpec(
    {
      seed: 1,
      hyperparameters: { batch_size: batchSize, n_epochs: epochs },
      training: { learning_rate: 1e-4 },
    },
    { model: 'bench', contextLength: contextLength(model.config), trainingExamples: batchSize },
  );
}

interface BenchConfig {
  n_embd: number;
  n_layer: number;
  n_head: number;
  seq_len: number;
  batch_size: number;
  vocab_size: number;
  r: number;
}

/** GPT-2 style, d = 256, 4 layers, seq 128, batch 8, r = 8 on c_attn (issue 4). */
const REFERENCE: BenchConfig = {
  n_embd: 256,
  n_layer: 4,
  n_head: 4,
  seq_len: 128,
  batch_size: 8,
  vocab_size: 4096,
  r: 8,
};
const SMOKE: BenchConfig = {
  n_embd: 64,
  n_layer: 2,
  n_head: 2,
  seq_len: 32,
  batch_size: 2,
  vocab_size: 512,
  r: 8,
};

const ROOT = join(__dirname, '..', '..', '..');
const args = process.argv.slice(2);
const flag = (name: string) => args.includes(name);
const option = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const smoke = flag('--smoke');
const json = flag('--json');
const config = smoke ? SMOKE : REFERENCE;
const timedSteps = Number(option('--steps') ?? (smoke ? 1 : 3));
const log = (message: string) => process.stderr.write(`[bench:train] ${message}\n`);

function buildModel(cfg: BenchConfig, mode: ParameterMode): CausalLM {
  const model = createRandomCausalLM(
    parseModelConfig({
      model_type: 'gpt2',
      vocab_size: cfg.vocab_size,
      n_embd: cfg.n_embd,
      n_layer: cfg.n_layer,
      n_head: cfg.n_head,
      n_positions: cfg.seq_len,
    }),
    1,
    { mode },
  );
  if (mode === 'lora') {
    model.addAdapter(
      'bench',
      { r: cfg.r, alpha: 2 * cfg.r, dropout: 0, targetModules: ['c_attn'], useRslora: false },
      1,
    );
  }
  return model;
}

/** One batch of random-looking ids; every token after the first is a target (as in torch). */
function benchData(cfg: BenchConfig): TokenizedSequence[] {
  return Array.from({ length: cfg.batch_size }, (_, b) => {
    const ids = Array.from(
      { length: cfg.seq_len },
      (_, t) => (b * 7919 + t * 104729) % cfg.vocab_size,
    );
    return { inputIds: ids, lossMask: ids.map((_, t) => (t === 0 ? 0 : 1)) };
  });
}

interface StepTiming {
  step_ms: number;
  tokens_per_second: number;
  trainable_parameters: number;
  optimizer_state_bytes: number;
}

async function timeTraining(
  model: CausalLM,
  cfg: BenchConfig,
  warmup: number,
  steps: number,
): Promise<StepTiming> {
  const trainer = new Trainer({
    model,
    train: benchData(cfg),
    padTokenId: 0,
    shuffle: false,
    spec: benchSpec(model, cfg.batch_size, warmup + steps),
  });
  try {
    for (let i = 0; i < warmup; i++) await trainer.trainStep();
    const started = performance.now();
    for (let i = 0; i < steps; i++) await trainer.trainStep();
    const stepMs = (performance.now() - started) / steps;
    return {
      step_ms: stepMs,
      tokens_per_second: (cfg.batch_size * cfg.seq_len) / (stepMs / 1000),
      trainable_parameters: model.trainableVariables().reduce((n, v) => n + v.size, 0),
      optimizer_state_bytes: trainer.optimizerStateBytes,
    };
  } finally {
    trainer.dispose();
  }
}

function runTorch(
  cfg: BenchConfig,
  steps: number,
): { tokens_per_second: number; step_ms: number; threads: number } | null {
  const python = '/usr/bin/python3';
  if (!existsSync(python)) return null;
  const result = spawnSync(
    python,
    [
      join(ROOT, 'tools', 'reference', 'bench_train.py'),
      '--n-embd', String(cfg.n_embd),
      '--n-layer', String(cfg.n_layer),
      '--n-head', String(cfg.n_head),
      '--seq-len', String(cfg.seq_len),
      '--batch-size', String(cfg.batch_size),
      '--vocab-size', String(cfg.vocab_size),
      '--r', String(cfg.r),
      '--steps', String(Math.max(steps, smoke ? 2 : 5)),
      '--warmup', smoke ? '1' : '2',
    ], // prettier-ignore
    { encoding: 'utf8' },
  );
  if (result.status !== 0) {
    log(
      `PyTorch reference unavailable: ${(result.stderr || result.error?.message || '').trim().split('\n').pop()}`,
    );
    return null;
  }
  return JSON.parse(result.stdout.trim().split('\n').pop()!) as {
    tokens_per_second: number;
    step_ms: number;
    threads: number;
  };
}

/** Median of `repeats` timings of `fn`, alternating callers should interleave to share noise. */
function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function mergedInference(cfg: BenchConfig) {
  const base = buildModel(cfg, 'lora');
  base.disableAdapters();
  const merged = buildModel(cfg, 'lora');
  // A trained-looking adapter (B ≠ 0), folded into the weights.
  for (const [name, v] of merged.namedTrainableVariables()) {
    if (name.endsWith('lora_B'))
      tf.tidy(() => v.assign(tf.randomNormal(v.shape, 0, 0.02, 'float32', 3)));
  }
  merged.mergeAdapter('bench');
  const unmerged = buildModel(cfg, 'lora');
  const ids = benchData(cfg).map((s) => [...s.inputIds]);
  const forwardMs = (model: CausalLM) => {
    const started = performance.now();
    // Read outside tidy: tidy walks whatever its callback returns, element by element.
    const logits = tf.tidy(() => model.forward(tf.tensor2d(ids, undefined, 'int32'))); // [B, T, V]
    logits.dataSync();
    logits.dispose();
    return performance.now() - started;
  };
  const decodeMs = (model: CausalLM, adapter: string | null) => {
    const decoder = new KvCacheDecoder(model, adapter);
    const started = performance.now();
    let next = ids[0].slice(0, 8);
    for (let i = 0; i < (smoke ? 8 : 32); i++) {
      const logits = decoder.step(next);
      next = [tf.tidy(() => tf.argMax(logits, 1).dataSync()[0])];
      logits.dispose();
    }
    decoder.dispose();
    return performance.now() - started;
  };
  const repeats = smoke ? 3 : 7;
  const timings = { base: [] as number[], merged: [] as number[], unmerged: [] as number[] };
  const decode = { base: [] as number[], merged: [] as number[], unmerged: [] as number[] };
  // Warm-up: first calls pack weights and compile; they are not what is measured.
  forwardMs(base);
  forwardMs(merged);
  forwardMs(unmerged);
  decodeMs(base, null);
  decodeMs(merged, 'bench');
  decodeMs(unmerged, 'bench');
  for (let i = 0; i < repeats; i++) {
    timings.base.push(forwardMs(base));
    timings.merged.push(forwardMs(merged));
    timings.unmerged.push(forwardMs(unmerged));
    decode.base.push(decodeMs(base, null));
    decode.merged.push(decodeMs(merged, 'bench'));
    decode.unmerged.push(decodeMs(unmerged, 'bench'));
  }
  for (const m of [base, merged, unmerged]) m.dispose();
  const f = {
    base: median(timings.base),
    merged: median(timings.merged),
    unmerged: median(timings.unmerged),
  };
  const d = {
    base: median(decode.base),
    merged: median(decode.merged),
    unmerged: median(decode.unmerged),
  };
  return {
    backend: tf.getBackend(),
    forward_ms: { ...f, batch: [cfg.batch_size, cfg.seq_len] },
    merged_over_base: f.merged / f.base,
    unmerged_over_base: f.unmerged / f.base,
    decode_ms_per_token: {
      base: d.base / (smoke ? 8 : 32),
      merged: d.merged / (smoke ? 8 : 32),
      unmerged: d.unmerged / (smoke ? 8 : 32),
    },
    decode_merged_over_base: d.merged / d.base,
  };
}

async function profileStep(cfg: BenchConfig) {
  const model = buildModel(cfg, 'lora');
  const trainer = new Trainer({
    model,
    train: benchData(cfg),
    padTokenId: 0,
    shuffle: false,
    spec: benchSpec(model, cfg.batch_size, 3),
  });
  // Two warm-up steps: the second can still grow the wasm heap (a one-time cost that lands
  // on whichever kernel allocates past the old peak, e.g. 50 ms on one Sub).
  await trainer.trainStep();
  await trainer.trainStep();
  const started = performance.now();
  const info = await tf.profile(async () => {
    await trainer.trainStep();
  });
  const wall = performance.now() - started;
  trainer.dispose();
  model.dispose();
  const byOp = new Map<string, { ms: number; calls: number }>();
  let wrappers = 0;
  for (const kernel of info.kernels) {
    // Custom-gradient wrappers ("unnamed scope", the loss's "forward") are listed too, and
    // their time includes the kernels inside them: count real kernels only.
    if (!tf.getKernel(kernel.name, tf.getBackend())) {
      wrappers += Number(kernel.kernelTimeMs);
      continue;
    }
    // Split products: batched ones (attention) run on wasm's slow loop, 2-D ones on XNNPACK.
    const name =
      kernel.name === 'BatchMatMul'
        ? (kernel.inputShapes[0]?.length ?? 2) > 2
          ? 'BatchMatMul (batched)'
          : 'BatchMatMul (2-D)'
        : kernel.name;
    const entry = byOp.get(name) ?? { ms: 0, calls: 0 };
    entry.ms += Number(kernel.kernelTimeMs);
    entry.calls += 1;
    byOp.set(name, entry);
  }
  const total = [...byOp.values()].reduce((n, e) => n + e.ms, 0);
  const ops = [...byOp.entries()]
    .sort((a, b) => b[1].ms - a[1].ms)
    .map(([op, e]) => ({ op, ms: Math.round(e.ms), calls: e.calls, share: e.ms / total }));
  const top = ops.slice(0, 12);
  const rest = ops.slice(12);
  if (rest.length > 0) {
    top.push({
      op: `other (${rest.length} ops)`,
      ms: rest.reduce((n, o) => n + o.ms, 0),
      calls: rest.reduce((n, o) => n + o.calls, 0),
      share: rest.reduce((n, o) => n + o.share, 0),
    });
  }
  // Profiling adds per-kernel syncs; wall time is reported for reference only.
  return {
    backend: tf.getBackend(),
    profiled_step_wall_ms: Math.round(wall),
    kernel_ms: Math.round(total),
    // Time inside custom-gradient wrappers; it overlaps the kernels above.
    custom_gradient_wrapper_ms: Math.round(wrappers),
    ops: top,
  };
}

function profileLines(profile: Awaited<ReturnType<typeof profileStep>>): string[] {
  return [
    `profile (${profile.backend}, ${profile.kernel_ms} kernel ms):`,
    ...profile.ops.map(
      (o) =>
        `  ${o.op.padEnd(22)} ${String(o.ms).padStart(7)} ms ${(o.share * 100).toFixed(1).padStart(5)}%  ${o.calls} calls`,
    ),
  ];
}

async function main(): Promise<void> {
  const started = performance.now();
  const shape = option('--model-shape');
  if (shape !== undefined) {
    await runModelShapeBench({
      root: ROOT,
      shape,
      backends: (option('--backends') ?? 'auto').split(',').filter((b) => b !== '' && b !== 'none'),
      steps: Number(option('--steps') ?? (smoke ? 1 : 3)),
      smoke,
      json,
      batchSize: option('--batch-size') === undefined ? undefined : Number(option('--batch-size')),
      dtype: option('--dtype') as 'F32' | 'BF16' | undefined,
      torchThreads: flag('--no-torch')
        ? []
        : (option('--torch-threads') ?? '1,2').split(',').map(Number),
      build: !flag('--no-build'),
      timeoutSeconds: Number(option('--timeout-s') ?? 3600),
      log,
    });
    return;
  }
  const profileOnly = option('--profile-only');
  if (profileOnly) {
    // Just where one step's time goes on one backend (quick, for kernel work).
    const backend = await selectBackend(profileOnly);
    const profile = { ...(await profileStep(config)), backend };
    process.stdout.write(
      json ? `${JSON.stringify(profile)}\n` : `${profileLines(profile).join('\n')}\n`,
    );
    return;
  }
  const backends = (
    option('--backends') ?? 'wasm-blas,cpu-blas,wasm,webgpu,cpu,gpu,tensorflow'
  ).split(',');
  log(`config ${JSON.stringify(config)}${smoke ? ' (smoke)' : ''}, ${timedSteps} timed step(s)`);

  // The machine may be shared: PyTorch runs before and after the tfjs backends and the two
  // are averaged, so a load change during the run skews the ratio less.
  log('PyTorch reference (before)...');
  const torchBefore = runTorch(config, timedSteps);
  const results: Array<{ backend: string; tokens_per_second: number; step_ms: number }> = [];
  const measure = async (requested: string) => {
    let backend: string;
    try {
      backend = await selectBackend(requested);
    } catch (error) {
      log(`${requested}: not available (${(error as Error).message.split('.')[0]})`);
      return;
    }
    // The cpu backend is ~20× slower than wasm at this size and has nothing to warm up
    // (no kernels to compile, no weights to pack), so its single step is timed cold.
    const slow = backend === 'cpu' && !smoke;
    const steps = slow ? 1 : timedSteps;
    log(`${backend}: timing ${steps} LoRA step(s)...`);
    const model = buildModel(config, 'lora');
    const timing = await timeTraining(model, config, slow ? 0 : 1, steps);
    model.dispose();
    results.push({ backend, tokens_per_second: timing.tokens_per_second, step_ms: timing.step_ms });
    log(
      `${backend}: ${timing.step_ms.toFixed(0)} ms/step, ${timing.tokens_per_second.toFixed(0)} tokens/s`,
    );
  };
  // The slow cpu backend goes after the second PyTorch run, which should stay close in time
  // to the fast backends it is compared with.
  for (const requested of backends.filter((b) => b !== 'cpu')) await measure(requested);
  if (backends.includes('wasm') && !flag('--no-stock')) {
    // The same step with tfjs-wasm's own MatMul paths (transposed and batched products on its
    // slow loop): what backend/matmul.ops.ts gains.
    process.env.LORAFLEET_WASM_FAST_MATMUL = '0';
    await measure('wasm');
    delete process.env.LORAFLEET_WASM_FAST_MATMUL;
    results[results.length - 1].backend = 'wasm (stock matmul)';
  }
  log('PyTorch reference (after)...');
  const torchAfter = runTorch(config, timedSteps);
  if (backends.includes('cpu')) await measure('cpu');
  const torchRuns = [torchBefore, torchAfter].filter((t) => t !== null);
  const torch =
    torchRuns.length === 0
      ? null
      : {
          step_ms: torchRuns.reduce((n, t) => n + t.step_ms, 0) / torchRuns.length,
          tokens_per_second:
            torchRuns.reduce((n, t) => n + t.tokens_per_second, 0) / torchRuns.length,
          threads: torchRuns[0].threads,
          runs_step_ms: torchRuns.map((t) => t.step_ms),
        };
  if (torch)
    log(
      `torch: ${torch.step_ms.toFixed(0)} ms/step, ${torch.tokens_per_second.toFixed(0)} tokens/s, ${torch.threads} thread(s)`,
    );
  const ratio = Object.fromEntries(
    results.map((r) => [r.backend, torch ? r.tokens_per_second / torch.tokens_per_second : null]),
  );

  // Full fine-tuning makes the token embedding trainable; its gradient needs the
  // UnsortedSegmentSum kernel, which the wasm backend lacks (DESIGN §7), so this comparison
  // runs on the cpu backend, both modes on the same model.
  log('LoRA vs full fine-tuning on cpu...');
  await initBackend('cpu');
  const fullConfig = smoke ? SMOKE : { ...REFERENCE, batch_size: 2 };
  const loraModel = buildModel(fullConfig, 'lora');
  const lora = await timeTraining(loraModel, fullConfig, smoke ? 1 : 0, 1);
  loraModel.dispose();
  const fullModel = buildModel(fullConfig, 'full');
  const full = await timeTraining(fullModel, fullConfig, smoke ? 1 : 0, 1);
  fullModel.dispose();

  log('merged-adapter inference vs base on wasm...');
  await initBackend('wasm');
  const inference = mergedInference(config);
  // Where a step's time goes on the fastest CPU backend that loads here.
  let profiled = 'wasm';
  try {
    profiled = await selectBackend('wasm-blas');
  } catch {
    await selectBackend('wasm');
  }
  log(`profiling one step on ${profiled}...`);
  const profile = { ...(await profileStep(config)), backend: profiled };

  const report = {
    config,
    results,
    torch,
    ratio_to_torch: ratio,
    lora_vs_full: {
      backend: 'cpu',
      config: fullConfig,
      lora,
      full,
      trainable_ratio: lora.trainable_parameters / full.trainable_parameters,
      optimizer_state_ratio: lora.optimizer_state_bytes / full.optimizer_state_bytes,
      step_time_ratio: lora.step_ms / full.step_ms,
    },
    merged_inference: inference,
    profile,
    machine: {
      cpus: cpus().length,
      cpu_model: cpus()[0]?.model ?? 'unknown',
      load_average_1m: loadavg()[0],
      node: process.version,
      tfjs: tf.version.tfjs,
    },
    smoke,
    seconds: (performance.now() - started) / 1000,
  };
  if (json) {
    process.stdout.write(`${JSON.stringify(report)}\n`);
    return;
  }
  const lines = [
    `config: ${JSON.stringify(config)}`,
    ...results.map(
      (r) =>
        `${r.backend.padEnd(14)} ${r.tokens_per_second.toFixed(0).padStart(8)} tokens/s ${r.step_ms.toFixed(0).padStart(8)} ms/step` +
        (torch ? `  ${(r.tokens_per_second / torch.tokens_per_second).toFixed(3)}× torch` : ''),
    ),
    torch
      ? `${'torch'.padEnd(14)} ${torch.tokens_per_second.toFixed(0).padStart(8)} tokens/s ${torch.step_ms.toFixed(0).padStart(8)} ms/step  (${torch.threads} thread(s))`
      : 'torch: not available',
    `LoRA vs full (cpu, ${JSON.stringify(fullConfig)}): trainable ${lora.trainable_parameters} vs ${full.trainable_parameters}, ` +
      `optimizer state ${lora.optimizer_state_bytes} vs ${full.optimizer_state_bytes} bytes, step ${lora.step_ms.toFixed(0)} vs ${full.step_ms.toFixed(0)} ms`,
    `merged/base forward latency: ${inference.merged_over_base.toFixed(3)} (unmerged adapter ${inference.unmerged_over_base.toFixed(3)}); decode ${inference.decode_merged_over_base.toFixed(3)}`,
    ...profileLines(profile),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(
    `bench:train failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
  process.exitCode = 1;
});
