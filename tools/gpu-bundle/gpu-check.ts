/**
 * The GPU bundle's check and benchmark (issue 18; `run.sh` in `dist/gpu-bundle/` runs it,
 * `npm run gpu:bundle` builds it). One command on a GPU node reports:
 *   1. the Vulkan adapters Dawn finds and how the NVIDIA ICD was found;
 *   2. a LoRA training run on webgpu through the worker's own trainer child, resumed from a
 *      mid-run checkpoint, whose adapter must come out byte-identical;
 *   3. logits parity of webgpu against the bundled cpu backend (≤ 1e-4), base and with the
 *      adapter of step 2;
 *   4. training tokens/s and GPU memory on webgpu at the reference config and at the
 *      gpt2-small / smollm2-135m shapes;
 *   5. the same LoRA step in PyTorch on the same GPU when `python3 -c 'import torch'` works.
 * Each step runs in its own process (a lost device or an out-of-memory in one benchmark must
 * not take the report with it) and writes its result as JSON; `main` collects them into
 * gpu-report.json and summary.txt and exits 1 naming every failed step.
 *
 * `--smoke` is the same code path on Dawn's OpenGL ES backend (llvmpipe without a GPU) with
 * tiny sizes: CI runs it to prove the bundle is self-contained.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { resolveFineTuneSpec } from '@lorafleet/data';
import {
  MODEL_SHAPES,
  Trainer,
  contextLength,
  deviceBindingLimitBytes,
  importPeftAdapter,
  initBackend,
  initWebgpuBackend,
  largestTrainingBuffer,
  loadCausalLM,
  measureWebgpuTraffic,
  parseModelConfig,
  webgpuDeviceErrors,
  writeRandomModelDir,
  type CausalLM,
  type TokenizedSequence,
  type WebgpuBackendInfo,
} from '@lorafleet/lora-core';
import {
  TrainerProcess,
  describeOutcome,
  forkTrainerChild,
} from '../../apps/worker/src/trainer/trainer-process';
import type {
  TrainerCheckpoint,
  TrainerResult,
  TrainerSpec,
} from '../../apps/worker/src/trainer/trainer-protocol';
import { discoverVulkanIcd, type IcdDiscovery } from './vulkan-icd';

const PARITY_TOLERANCE = 1e-4;
/** dawn.node and Debian 12's libvulkan.so.1 link against glibc 2.34 symbols. */
const MIN_GLIBC = [2, 34] as const;

/** The C library's version as Node reports it (null on musl or when unknown). */
function glibcVersion(): string | null {
  const report = process.report?.getReport() as
    { header?: { glibcVersionRuntime?: string } } | undefined;
  return report?.header?.glibcVersionRuntime ?? null;
}

function glibcTooOld(version: string | null): boolean {
  if (version === null) return false; // not glibc: let Dawn's own load error speak
  const [major, minor] = version.split('.').map(Number);
  return major < MIN_GLIBC[0] || (major === MIN_GLIBC[0] && minor < MIN_GLIBC[1]);
}

// ------------------------------------------------------------------ arguments and helpers

const argv = process.argv.slice(2);
const command = argv[0] ?? 'main';
const option = (name: string): string | undefined => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const flag = (name: string) => argv.includes(name);
const log = (message: string) => process.stderr.write(`[gpu-check] ${message}\n`);

function required(name: string): string {
  const value = option(name);
  if (value === undefined) throw new Error(`missing ${name}`);
  return value;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function writeJson(path: string, value: unknown): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(value, null, 2)}\n`);
}

/** A model config the benchmark trains: a MODEL_SHAPES entry or the reference config. */
interface BenchTarget {
  name: string;
  config: Record<string, unknown>;
  dtype: 'F32' | 'BF16';
  batchSize: number;
  seqLength: number;
  r: number;
  targetModules: string[];
}

/** GPT-2, d=256, 4 layers, seq 128, batch 8, vocab 4096, r=8 on c_attn (issue 4, bench:train). */
const REFERENCE: BenchTarget = {
  name: 'reference',
  config: {
    model_type: 'gpt2',
    vocab_size: 4096,
    n_embd: 256,
    n_layer: 4,
    n_head: 4,
    n_positions: 128,
    tie_word_embeddings: true,
  },
  dtype: 'F32',
  batchSize: 8,
  seqLength: 128,
  r: 8,
  targetModules: ['c_attn'],
};

function shapeTarget(name: 'gpt2-small' | 'smollm2-135m'): BenchTarget {
  const shape = MODEL_SHAPES[name];
  return {
    name,
    config: shape.config,
    dtype: shape.dtype,
    batchSize: shape.batchSize,
    seqLength: shape.seqLength,
    r: shape.lora.r,
    targetModules: shape.lora.targetModules,
  };
}

/** --smoke: the same architectures, nothing of their size (seconds on llvmpipe). */
function smokeTarget(name: string, arch: 'gpt2' | 'llama'): BenchTarget {
  const config =
    arch === 'gpt2'
      ? { model_type: 'gpt2', vocab_size: 512, n_embd: 64, n_layer: 2, n_head: 2, n_positions: 32 }
      : {
          model_type: 'llama',
          vocab_size: 512,
          hidden_size: 64,
          intermediate_size: 128,
          num_hidden_layers: 2,
          num_attention_heads: 4,
          num_key_value_heads: 2,
          max_position_embeddings: 64,
          tie_word_embeddings: true,
        };
  return {
    name,
    config,
    dtype: arch === 'gpt2' ? 'F32' : 'BF16',
    batchSize: 2,
    seqLength: 32,
    r: 8,
    targetModules: arch === 'gpt2' ? ['c_attn'] : ['q_proj', 'v_proj'],
  };
}

function benchTargets(smoke: boolean): BenchTarget[] {
  return smoke
    ? [
        smokeTarget('reference', 'gpt2'),
        smokeTarget('gpt2-small', 'gpt2'),
        smokeTarget('smollm2-135m', 'llama'),
      ]
    : [REFERENCE, shapeTarget('gpt2-small'), shapeTarget('smollm2-135m')];
}

// ------------------------------------------------------------------ step: adapters

interface DawnModule {
  create(flags: string[]): GPU;
}

/** Dawn from the bundle's node_modules/webgpu (the entry needs Node ≥ 20.19 to `require`). */
function loadDawn(): DawnModule {
  const load = createRequire(__filename);
  try {
    return load('webgpu') as DawnModule;
  } catch {
    const dir = dirname(load.resolve('webgpu/package.json'));
    return load(
      join(dir, 'dist', `${process.platform}-${process.arch}`, 'dawn.node'),
    ) as DawnModule;
  }
}

interface AdapterSeen {
  request: string;
  found: boolean;
  vendor?: string;
  architecture?: string;
  device?: string;
  description?: string;
  software?: boolean;
  maxStorageBufferBindingSize?: number;
  maxBufferSize?: number;
  error?: string;
}

/**
 * WebGPU cannot list adapters, so Dawn is asked each way an adapter can be requested: Vulkan
 * for high performance and for low power (a discrete and an integrated GPU), and OpenGL ES.
 */
async function adaptersStep(gles: boolean): Promise<{ adapters: AdapterSeen[] }> {
  const dawn = loadDawn();
  const requests: Array<{
    label: string;
    backend: string;
    options: GPURequestAdapterOptions & { featureLevel?: string };
  }> = [
    {
      label: 'vulkan, high-performance',
      backend: 'vulkan',
      options: { powerPreference: 'high-performance' },
    },
    { label: 'vulkan, low-power', backend: 'vulkan', options: { powerPreference: 'low-power' } },
    // GLES only where it is the adapter the run will use (--smoke): on a GPU node, EGL goes
    // through the NVIDIA driver, and a crash there would take the Vulkan findings with it.
    ...(gles
      ? [
          {
            label: 'opengles (compatibility)',
            backend: 'opengles',
            options: { featureLevel: 'compatibility' },
          },
        ]
      : []),
  ];
  const adapters: AdapterSeen[] = [];
  for (const request of requests) {
    try {
      const gpu = dawn.create([`backend=${request.backend}`]);
      const adapter = await gpu.requestAdapter(request.options);
      if (!adapter) {
        adapters.push({ request: request.label, found: false });
        continue;
      }
      const info = (
        adapter as GPUAdapter & { info: GPUAdapterInfo & { isFallbackAdapter?: boolean } }
      ).info;
      const names = [info.vendor, info.architecture, info.device, info.description].join(' ');
      adapters.push({
        request: request.label,
        found: true,
        vendor: info.vendor,
        architecture: info.architecture,
        device: info.device,
        description: info.description,
        software:
          info.isFallbackAdapter === true || /llvmpipe|lavapipe|softpipe|swiftshader/i.test(names),
        maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
        maxBufferSize: adapter.limits.maxBufferSize,
      });
    } catch (error) {
      adapters.push({ request: request.label, found: false, error: errorText(error) });
    }
  }
  return { adapters };
}

// ------------------------------------------------------------------ step: train + resume

function spec(bundle: string, steps: number, resumeFrom: Uint8Array | null): TrainerSpec {
  return {
    jobId: 'gpu-check',
    modelName: 'tiny-random-gpt2',
    modelDir: join(bundle, 'models', 'tiny-random-gpt2'),
    baseModelHash: 'not-checked',
    trainingJsonl: readFileSync(join(bundle, 'data', 'train.jsonl'), 'utf8'),
    validationJsonl: readFileSync(join(bundle, 'data', 'valid.jsonl'), 'utf8'),
    spec: resolveFineTuneSpec(
      {
        seed: 7,
        hyperparameters: { n_epochs: 1, batch_size: 8 },
        lora: { dropout: 0.05 },
        training: {
          learning_rate: 2e-3,
          max_seq_length: 64,
          warmup_steps: 1,
          max_steps: steps,
          eval_every_steps: steps,
        },
      },
      { model: 'tiny-random-gpt2', contextLength: 64, trainingExamples: 8 },
    ),
    backend: 'webgpu',
    checkpointEverySteps: Math.floor(steps / 2),
    checkpointEverySeconds: 3600,
    resumeFrom,
    memoryLimitMb: null,
  };
}

/**
 * Runs the worker's trainer child twice: once straight through (keeping its mid-run
 * checkpoint, as the worker stores it), then resumed from that checkpoint as a retried job
 * would be. Resume is exact when both adapters are the same bytes.
 */
/** The run's result; any other outcome is an error naming it. */
async function trainerResult(trainer: TrainerProcess): Promise<TrainerResult> {
  const outcome = await trainer.outcome;
  if (outcome.kind !== 'succeeded') throw new Error(`the trainer ${describeOutcome(outcome)}`);
  return outcome.result;
}

async function trainStep(bundle: string, out: string, steps: number) {
  const trainer = join(bundle, 'app', 'trainer.cjs');
  const checkpoints: TrainerCheckpoint[] = [];
  let backend = '';
  const started = performance.now();
  const first = await trainerResult(
    new TrainerProcess(
      spec(bundle, steps, null),
      {
        onReady: (b) => {
          backend = b;
        },
        onCheckpoint: (c) => {
          checkpoints.push(c);
          return Promise.resolve();
        },
      },
      forkTrainerChild(trainer),
    ),
  );
  const firstSeconds = (performance.now() - started) / 1000;
  const mid = checkpoints.find((c) => c.step < first.steps);
  if (!mid)
    throw new Error(
      `the trainer stored no mid-run checkpoint (got steps ${checkpoints.map((c) => c.step).join(', ')})`,
    );
  let resumedFrom: number | null = null;
  const resumed = await trainerResult(
    new TrainerProcess(
      spec(bundle, steps, mid.blob),
      {
        onReady: (_b, step) => {
          resumedFrom = step;
        },
      },
      forkTrainerChild(trainer),
    ),
  );
  const adapterDir = join(out, 'adapter');
  mkdirSync(adapterDir, { recursive: true });
  writeFileSync(
    join(adapterDir, 'adapter_config.json'),
    `${JSON.stringify(first.adapterConfig, null, 2)}\n`,
  );
  writeFileSync(join(adapterDir, 'adapter_model.safetensors'), first.adapterSafetensors);
  const identical = Buffer.from(first.adapterSafetensors).equals(
    Buffer.from(resumed.adapterSafetensors),
  );
  return {
    ok: identical && backend === 'webgpu' && resumedFrom === mid.step,
    backend,
    steps: first.steps,
    final_loss: first.finalLoss,
    resumed_final_loss: resumed.finalLoss,
    resumed_from_step: resumedFrom,
    checkpoint_step: mid.step,
    adapter_bytes: first.adapterSafetensors.length,
    resume_byte_identical: identical,
    tokens_per_second: first.tokensPerSecond,
    seconds: firstSeconds,
    adapter_dir: adapterDir,
    error: identical ? undefined : 'the resumed run wrote a different adapter',
  };
}

// ------------------------------------------------------------------ step: parity

/** Fixed token ids inside the vocabulary: [2, 24], the second row left-padded. */
function parityInputs(vocab: number): { ids: number[][]; mask: number[][] } {
  const t = 24;
  const ids = [0, 1].map((b) =>
    Array.from({ length: t }, (_, i) => (b * 131 + i * 17 + 3) % vocab),
  );
  const mask = [Array<number>(t).fill(1), Array.from({ length: t }, (_, i) => (i < 5 ? 0 : 1))];
  return { ids, mask };
}

async function logitsOn(modelDir: string, adapterDir: string | null): Promise<Float32Array[]> {
  const model: CausalLM = await loadCausalLM(modelDir);
  try {
    const { ids, mask } = parityInputs(model.config.vocabSize);
    const run = async () => {
      const logits = tf.tidy(() =>
        model.forward(tf.tensor2d(ids, undefined, 'int32'), tf.tensor2d(mask)),
      );
      const data = (await logits.data()) as Float32Array;
      logits.dispose();
      return data;
    };
    const results = [await run()];
    if (adapterDir !== null) {
      importPeftAdapter(
        model,
        'trained',
        readFileSync(join(adapterDir, 'adapter_config.json'), 'utf8'),
        readFileSync(join(adapterDir, 'adapter_model.safetensors')),
      );
      results.push(await run());
    }
    return results;
  } finally {
    model.dispose();
  }
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return a.length === b.length ? max : Number.POSITIVE_INFINITY;
}

async function parityStep(bundle: string, adapterDir: string | null) {
  const modelDir = join(bundle, 'models', 'tiny-random-gpt2');
  await initBackend('cpu');
  const cpu = await logitsOn(modelDir, adapterDir);
  const info = await initWebgpuBackend();
  const gpu = await logitsOn(modelDir, adapterDir);
  const base = maxAbsDiff(cpu[0], gpu[0]);
  const lora = adapterDir !== null ? maxAbsDiff(cpu[1], gpu[1]) : null;
  const errors = webgpuDeviceErrors();
  const ok =
    base <= PARITY_TOLERANCE && (lora === null || lora <= PARITY_TOLERANCE) && errors.length === 0;
  return {
    ok,
    adapter: info.adapter,
    tolerance: PARITY_TOLERANCE,
    base_max_abs: base,
    lora_max_abs: lora,
    device_errors: errors.slice(0, 5),
    error: ok
      ? undefined
      : errors.length > 0
        ? `webgpu device errors: ${errors[0]}`
        : `max |Δlogit| ${Math.max(base, lora ?? 0).toExponential(2)} > ${PARITY_TOLERANCE}`,
  };
}

// ------------------------------------------------------------------ step: bench (webgpu)

function benchData(target: BenchTarget, vocab: number): TokenizedSequence[] {
  return Array.from({ length: target.batchSize }, (_, b) => {
    const ids = Array.from({ length: target.seqLength }, (_, t) => (b * 7919 + t * 104729) % vocab);
    return { inputIds: ids, lossMask: ids.map((_, t) => (t === 0 ? 0 : 1)) };
  });
}

function nvidiaSmiMemoryMb(): number | null {
  const run = spawnSync(
    'nvidia-smi',
    ['--query-gpu=memory.used', '--format=csv,noheader,nounits'],
    {
      encoding: 'utf8',
    },
  );
  if (run.status !== 0) return null;
  const value = Number(run.stdout.trim().split('\n')[0]);
  return Number.isFinite(value) ? value : null;
}

function gpuBytes(): { used: number; allocated: number } {
  const memory = tf.memory() as tf.MemoryInfo & {
    numBytesInGPU?: number;
    numBytesAllocatedInGPU?: number;
  };
  return { used: memory.numBytesInGPU ?? 0, allocated: memory.numBytesAllocatedInGPU ?? 0 };
}

async function benchStep(target: BenchTarget, workDir: string, steps: number) {
  const info: WebgpuBackendInfo = await initWebgpuBackend();
  const config = parseModelConfig(target.config);
  // The (float32) embedding, also the tied LM head: past the binding limit it is split into
  // row blocks. What cannot be split (an activation, a weight's row) must fit one buffer.
  const embeddingBytes = config.vocabSize * config.hiddenSize * 4;
  const limit = deviceBindingLimitBytes()!;
  const largest = largestTrainingBuffer({
    config,
    batchSize: target.batchSize,
    seqLength: target.seqLength,
    lora: { r: target.r, targetModules: target.targetModules },
    weightBytesPerParameter: 4,
    gradientCheckpointing: false,
  });
  const base = {
    adapter: info.adapter,
    max_storage_buffer_binding_size: info.limits.maxStorageBufferBindingSize,
    embedding_bytes: embeddingBytes,
    embedding_split: embeddingBytes > limit,
    largest_unsplit_buffer: largest.what,
    largest_unsplit_bytes: largest.bytes,
    batch_size: target.batchSize,
    seq_length: target.seqLength,
  };
  if (largest.bytes > limit) {
    // Bound past the limit, tfjs' kernels would read garbage; refuse with the figures instead.
    return {
      ...base,
      ok: false,
      error: `${largest.what} (${(largest.bytes / 2 ** 20).toFixed(0)} MiB) exceeds this adapter's maxStorageBufferBindingSize (${(limit / 2 ** 20).toFixed(0)} MiB) and cannot be split`,
    };
  }
  const modelDir = join(workDir, 'models', `${target.name}-${target.dtype.toLowerCase()}`);
  if (!existsSync(join(modelDir, 'model.safetensors'))) {
    await writeRandomModelDir(modelDir, target.config, { dtype: target.dtype });
  }
  const smiBefore = nvidiaSmiMemoryMb();
  const model = await loadCausalLM(modelDir);
  model.addAdapter(
    'bench',
    {
      r: target.r,
      alpha: 2 * target.r,
      dropout: 0,
      targetModules: target.targetModules,
      useRslora: false,
    },
    1,
  );
  const trainer = new Trainer({
    model,
    train: benchData(target, config.vocabSize),
    padTokenId: 0,
    shuffle: false,
    spec: resolveFineTuneSpec(
      {
        seed: 1,
        hyperparameters: { batch_size: target.batchSize, n_epochs: 1 + steps },
        training: { learning_rate: 1e-4 },
      },
      {
        model: 'gpu-check',
        contextLength: contextLength(model.config),
        trainingExamples: target.batchSize,
      },
    ),
  });
  let peak = gpuBytes();
  const warmupStarted = performance.now();
  await trainer.trainStep();
  const warmupMs = performance.now() - warmupStarted;
  const started = performance.now();
  // What the last timed step moved between host and GPU (the counters cost a few calls).
  let traffic: Awaited<ReturnType<typeof measureWebgpuTraffic>>['traffic'] | null = null;
  for (let i = 0; i < steps; i++) {
    ({ traffic } = await measureWebgpuTraffic(() => trainer.trainStep()));
    const now = gpuBytes();
    peak = {
      used: Math.max(peak.used, now.used),
      allocated: Math.max(peak.allocated, now.allocated),
    };
  }
  const stepMs = (performance.now() - started) / steps;
  const smiAfter = nvidiaSmiMemoryMb();
  const errors = webgpuDeviceErrors();
  trainer.dispose();
  model.dispose();
  return {
    ...base,
    ok: errors.length === 0,
    tokens_per_second: (target.batchSize * target.seqLength) / (stepMs / 1000),
    step_ms: stepMs,
    warmup_step_ms: warmupMs,
    steps,
    step_traffic: traffic,
    gpu_memory_mb: {
      tfjs_in_use: peak.used / 2 ** 20,
      tfjs_allocated: peak.allocated / 2 ** 20,
      nvidia_smi_delta: smiBefore !== null && smiAfter !== null ? smiAfter - smiBefore : null,
    },
    device_errors: errors.slice(0, 5),
    error: errors.length > 0 ? `webgpu device errors: ${errors[0]}` : undefined,
  };
}

// ------------------------------------------------------------------ main (orchestrator)

interface StepResult {
  name: string;
  status: 'ok' | 'failed' | 'skipped';
  seconds: number;
  error?: string;
  log?: string;
  data?: Record<string, unknown>;
}

/** Runs one step as a child process of this bundle; its JSON result or why there is none. */
function runChild(
  name: string,
  args: string[],
  out: string,
  env: NodeJS.ProcessEnv,
  timeoutS: number,
): StepResult {
  const resultFile = join(out, 'steps', `${name}.json`);
  const logFile = join(out, 'logs', `${name}.log`);
  mkdirSync(dirname(logFile), { recursive: true });
  const fd = openSync(logFile, 'w');
  log(`${name} …`);
  const started = performance.now();
  const run = spawnSync(process.execPath, [__filename, ...args, '--result', resultFile], {
    stdio: ['ignore', fd, fd],
    env,
    timeout: timeoutS * 1000,
    killSignal: 'SIGKILL',
  });
  closeSync(fd);
  const seconds = (performance.now() - started) / 1000;
  if (existsSync(resultFile)) {
    const data = JSON.parse(readFileSync(resultFile, 'utf8')) as Record<string, unknown> & {
      ok?: boolean;
      error?: string;
    };
    const status = data.ok === false || run.status !== 0 ? 'failed' : 'ok';
    log(`${name}: ${status} in ${seconds.toFixed(1)} s${data.error ? `: ${data.error}` : ''}`);
    return { name, status, seconds, error: data.error, log: logFile, data };
  }
  const tail = readFileSync(logFile, 'utf8').trim().split('\n').slice(-3).join(' | ');
  const why =
    run.error !== undefined && /ETIMEDOUT/.test(run.error.message)
      ? `timed out after ${timeoutS} s`
      : `exited with ${run.status ?? run.signal}`;
  log(`${name}: failed in ${seconds.toFixed(1)} s: ${why}`);
  return { name, status: 'failed', seconds, error: `${why}: ${tail}`, log: logFile };
}

/**
 * The environment for PyTorch: without the bundle's libraries on LD_LIBRARY_PATH (they are
 * Dawn's; a python stack may need a newer libstdc++ than the bundle's compat copy).
 */
function pythonEnv(bundle: string): NodeJS.ProcessEnv {
  const own = resolve(bundle, 'lib');
  const kept = (process.env.LD_LIBRARY_PATH ?? '')
    .split(':')
    .filter((dir) => dir !== '' && !resolve(dir).startsWith(own));
  const env = { ...process.env };
  if (kept.length > 0) env.LD_LIBRARY_PATH = kept.join(':');
  else delete env.LD_LIBRARY_PATH;
  return env;
}

function pythonWithTorch(env: NodeJS.ProcessEnv): {
  python: string;
  version: string;
  cuda: boolean;
  gpu: string | null;
} | null {
  const candidates = [process.env.LORAFLEET_PYTHON, 'python3', '/usr/bin/python3'].filter(
    (p): p is string => Boolean(p),
  );
  for (const python of candidates) {
    const run = spawnSync(
      python,
      [
        '-c',
        'import json, torch; c = torch.cuda.is_available(); print(json.dumps([torch.__version__, c, torch.cuda.get_device_name(0) if c else None]))',
      ],
      { encoding: 'utf8', timeout: 120_000, env },
    );
    if (run.status === 0) {
      const [version, cuda, gpu] = JSON.parse(run.stdout.trim().split('\n').pop() ?? '[]') as [
        string,
        boolean,
        string | null,
      ];
      return { python, version, cuda, gpu };
    }
  }
  return null;
}

function torchStep(
  target: BenchTarget,
  bundle: string,
  work: string,
  python: string,
  device: string,
  timeoutS: number,
): StepResult {
  const configPath = join(work, 'configs', `${target.name}.json`);
  writeJson(configPath, target.config);
  const started = performance.now();
  const run = spawnSync(
    python,
    [
      join(bundle, 'reference', 'bench_shapes.py'),
      '--config',
      configPath,
      '--batch-size',
      String(target.batchSize),
      '--seq-len',
      String(target.seqLength),
      '--targets',
      target.targetModules.join(','),
      '--r',
      String(target.r),
      '--alpha',
      String(2 * target.r),
      '--dropout',
      '0',
      '--device',
      device,
      ...(device === 'cpu' ? ['--steps', '1', '--warmup', '1'] : []),
    ],
    { encoding: 'utf8', timeout: timeoutS * 1000, killSignal: 'SIGKILL', env: pythonEnv(bundle) },
  );
  const seconds = (performance.now() - started) / 1000;
  const name = `torch-${target.name}`;
  if (run.status !== 0) {
    return {
      name,
      status: 'failed',
      seconds,
      error: (run.stderr || String(run.error ?? '')).trim().split('\n').slice(-2).join(' | '),
    };
  }
  const data = JSON.parse(run.stdout.trim().split('\n').pop() ?? '{}') as Record<string, unknown>;
  return { name, status: 'ok', seconds, data };
}

function nvidiaSmiList(): string[] {
  const run = spawnSync(
    'nvidia-smi',
    ['--query-gpu=name,driver_version,memory.total', '--format=csv,noheader'],
    {
      encoding: 'utf8',
    },
  );
  return run.status === 0 ? run.stdout.trim().split('\n').filter(Boolean) : [];
}

function fmt(n: unknown, digits = 0): string {
  return typeof n === 'number' && Number.isFinite(n)
    ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
    : '–';
}

function summaryText(
  report: Record<string, unknown>,
  steps: StepResult[],
  icd: IcdDiscovery,
): string {
  const lines: string[] = [];
  const env = report.environment as Record<string, unknown>;
  lines.push(`lorafleet GPU check (${String(report.mode)}) — ${String(report.date)}`);
  lines.push(
    `node ${String(env.node)}, glibc ${String(env.glibc)}, ${String(env.cpus)} CPUs, ${fmt(env.memory_gb, 1)} GB RAM`,
  );
  const gpus = env.nvidia_smi as string[];
  lines.push(`nvidia-smi: ${gpus.length > 0 ? gpus.join('; ') : 'not found'}`);
  lines.push('');
  lines.push(`Vulkan ICD: ${icd.nvidiaFoundBy ?? 'no NVIDIA ICD found'}`);
  lines.push(`  searched: ${icd.searched.join(', ')}`);
  if (icd.manifests.length > 0) {
    lines.push(
      `  manifests: ${icd.manifests.map((m) => `${m.path} → ${m.libraryPath ?? '?'}${m.libraryFound ? '' : ' (library missing)'}`).join('; ')}`,
    );
  }
  if (icd.fix) lines.push(`  fix: ${icd.fix}`);
  const adapters = steps.find((s) => s.name === 'adapters');
  for (const a of (adapters?.data?.adapters as AdapterSeen[] | undefined) ?? []) {
    lines.push(
      `  adapter [${a.request}]: ${a.found ? `${[a.vendor, a.architecture, a.device, a.description].filter(Boolean).join(' / ')}${a.software ? ' (software)' : ''}, maxStorageBufferBindingSize ${fmt((a.maxStorageBufferBindingSize ?? 0) / 2 ** 20)} MiB` : `none${a.error ? ` (${a.error})` : ''}`}`,
    );
  }
  lines.push(
    `  webgpu steps ran on: ${typeof report.dawn_backend === 'string' ? report.dawn_backend : 'none'}`,
  );
  lines.push('');
  const train = steps.find((s) => s.name === 'train-resume');
  if (train?.data) {
    const d = train.data;
    lines.push(
      `LoRA training (trainer child, ${String(d.backend)}): ${String(d.steps)} steps, loss ${fmt(d.final_loss, 4)}, ` +
        `resumed from step ${String(d.resumed_from_step)}: adapter ${d.resume_byte_identical ? 'byte-identical' : 'DIFFERENT'} (${String(d.adapter_bytes)} bytes)`,
    );
  }
  const parity = steps.find((s) => s.name === 'parity');
  if (parity?.data) {
    const d = parity.data;
    lines.push(
      `logits parity webgpu vs cpu: base ${fmt(d.base_max_abs, 8)}, LoRA ${d.lora_max_abs === null ? '–' : fmt(d.lora_max_abs, 8)} (max |Δ|, tolerance ${String(d.tolerance)})`,
    );
  }
  lines.push('');
  lines.push(
    'benchmark (one LoRA training step)      webgpu tok/s   ms/step   GPU MiB (tfjs / smi)   PyTorch tok/s   ratio',
  );
  for (const row of report.benchmark as Array<Record<string, unknown>>) {
    const mem = row.gpu_memory_mb as Record<string, number | null> | undefined;
    lines.push(
      `  ${String(row.name).padEnd(14)} ${String(row.shape).padEnd(22)} ${fmt(row.tokens_per_second).padStart(12)} ${fmt(row.step_ms).padStart(9)}   ${`${fmt(mem?.tfjs_allocated)} / ${fmt(mem?.nvidia_smi_delta)}`.padStart(20)} ${fmt(row.torch_tokens_per_second).padStart(15)} ${row.ratio === null ? '–'.padStart(7) : `${fmt(row.ratio, 2)}×`.padStart(7)}`,
    );
  }
  if (typeof report.torch === 'string') lines.push(`  PyTorch: ${report.torch}`);
  for (const row of report.benchmark as Array<Record<string, unknown>>) {
    const t = row.step_traffic as Record<string, number> | null | undefined;
    if (!t) continue;
    lines.push(
      `  ${String(row.name).padEnd(14)} per step: ${t.dispatches} dispatches, ${t.uploads} uploads ` +
        `(${fmt(t.uploadBytes / 1024)} KiB, largest ${fmt(t.largestUploadBytes / 1024)} KiB), ` +
        `${t.downloads} downloads (${t.downloadBytes} bytes)${row.embedding_split ? '; embedding split into row blocks' : ''}`,
    );
  }
  lines.push('');
  for (const s of steps) {
    lines.push(
      `  ${s.status.padEnd(7)} ${s.name.padEnd(22)} ${s.seconds.toFixed(1).padStart(6)} s${s.error ? `  ${s.error}` : ''}`,
    );
  }
  const failed = steps.filter((s) => s.status === 'failed').map((s) => s.name);
  lines.push('');
  lines.push(failed.length === 0 ? 'RESULT ok' : `RESULT FAILED: ${failed.join(', ')}`);
  return `${lines.join('\n')}\n`;
}

function main(): number {
  const smoke = flag('--smoke');
  const bundle = resolve(option('--bundle') ?? join(__dirname, '..'));
  const out = resolve(option('--out') ?? 'gpu-report');
  const work = join(out, 'work');
  mkdirSync(work, { recursive: true });
  const started = Date.now();
  const steps: StepResult[] = [];
  const childEnv: NodeJS.ProcessEnv = { ...process.env };

  const glibc = glibcVersion();
  if (glibcTooOld(glibc)) {
    steps.push({
      name: 'glibc',
      status: 'failed',
      seconds: 0,
      error:
        `this node has glibc ${glibc}; Dawn (dawn.node) and the bundled Vulkan loader need ` +
        `glibc ≥ ${MIN_GLIBC.join('.')} (Debian 12, Ubuntu 22.04, RHEL 9 or newer; in a container, ` +
        `a base image of that age, e.g. nvidia/cuda:*-ubuntu22.04)`,
    });
  }
  const icd = discoverVulkanIcd(process.env, work);
  Object.assign(childEnv, icd.env);
  log(`Vulkan ICD: ${icd.nvidiaFoundBy ?? 'no NVIDIA ICD'}`);

  const adapters = runChild(
    'adapters',
    smoke ? ['adapters', '--gles'] : ['adapters'],
    out,
    { ...childEnv, EGL_PLATFORM: childEnv.EGL_PLATFORM ?? 'surfaceless' },
    120,
  );
  steps.push(adapters);
  const seen = (adapters.data?.adapters as AdapterSeen[] | undefined) ?? [];
  const hardware = seen.find(
    (a) => a.request.startsWith('vulkan') && a.found && a.software === false,
  );
  // The GPU steps run where the check can mean something: Vulkan on a GPU; --smoke forces
  // Dawn's GLES backend (llvmpipe here), the one adapter a machine without a GPU has.
  let dawnBackend: string | null = smoke ? 'opengles' : hardware ? 'vulkan' : null;
  if (glibcTooOld(glibc)) {
    dawnBackend = null;
  } else if (!smoke && !hardware) {
    const softwareOnly = seen.find((a) => a.request.startsWith('vulkan') && a.found);
    steps.push({
      name: 'vulkan',
      status: 'failed',
      seconds: 0,
      error: softwareOnly
        ? `only a software Vulkan adapter (${softwareOnly.device ?? softwareOnly.description ?? '?'}): ${icd.fix ?? 'the NVIDIA ICD is not used'}`
        : `no Vulkan GPU adapter. ${icd.fix ?? 'The NVIDIA ICD was found but Dawn got no adapter from it; see logs/adapters.log.'}`,
    });
    dawnBackend = null;
  } else if (smoke) {
    steps.push({
      name: 'vulkan',
      status: 'skipped',
      seconds: 0,
      error: hardware
        ? undefined
        : `smoke: no Vulkan GPU adapter here (expected without a GPU); ${icd.fix ?? ''}`.trim(),
    });
  }
  if (dawnBackend !== null) childEnv.LORAFLEET_WEBGPU_BACKEND = dawnBackend;

  const gpuSteps = (name: string) => ({
    name,
    status: 'skipped' as const,
    seconds: 0,
    error: 'no usable webgpu adapter (see the failed steps above)',
  });
  let train: StepResult;
  if (dawnBackend === null) {
    train = gpuSteps('train-resume');
    steps.push(train, gpuSteps('parity'));
  } else {
    train = runChild(
      'train-resume',
      ['train', '--bundle', bundle, '--out', work, '--steps', smoke ? '4' : '8'],
      out,
      childEnv,
      smoke ? 150 : 300,
    );
    steps.push(train);
    const adapterDir = train.status === 'ok' ? String(train.data?.adapter_dir) : null;
    steps.push(
      runChild(
        'parity',
        ['parity', '--bundle', bundle, ...(adapterDir ? ['--adapter', adapterDir] : [])],
        out,
        childEnv,
        smoke ? 120 : 180,
      ),
    );
  }

  const targets = benchTargets(smoke);
  const torch = pythonWithTorch(pythonEnv(bundle));
  // Off a GPU (smoke) the PyTorch path still runs, on the CPU, to prove the script works.
  const torchDevice = torch === null ? null : torch.cuda ? 'cuda' : smoke ? 'cpu' : null;
  const benchmark: Array<Record<string, unknown>> = [];
  for (const target of targets) {
    // Smoke rows keep the real names for the code path, but say they are stand-ins.
    const shape = `${smoke ? 'tiny ' : ''}${String(target.config.model_type)} ${target.batchSize}×${target.seqLength}`;
    let tfjs: StepResult;
    if (dawnBackend === null) {
      tfjs = gpuSteps(`bench-${target.name}`);
    } else {
      const configPath = join(work, 'configs', `${target.name}.json`);
      writeJson(configPath, target);
      tfjs = runChild(
        `bench-${target.name}`,
        ['bench', '--target', configPath, '--work', work, '--steps', smoke ? '1' : '3'],
        out,
        childEnv,
        smoke ? 120 : 240,
      );
    }
    steps.push(tfjs);
    let torchResult: StepResult | null = null;
    if (torch !== null && torchDevice !== null) {
      log(`torch-${target.name} (${torchDevice}) …`);
      torchResult = torchStep(target, bundle, work, torch.python, torchDevice, smoke ? 120 : 300);
      steps.push(torchResult);
    }
    const tps = tfjs.data?.tokens_per_second as number | undefined;
    const torchTps = torchResult?.data?.tokens_per_second as number | undefined;
    benchmark.push({
      name: target.name,
      shape,
      tokens_per_second: tps ?? null,
      step_ms: tfjs.data?.step_ms ?? null,
      gpu_memory_mb: tfjs.data?.gpu_memory_mb ?? null,
      // Dispatches, uploads and downloads of one training step (issue 18: weights stay put).
      step_traffic: tfjs.data?.step_traffic ?? null,
      embedding_split: tfjs.data?.embedding_split ?? null,
      torch_tokens_per_second: torchTps ?? null,
      torch_peak_gpu_mb: torchResult?.data?.peak_gpu_mb ?? null,
      torch_device: torchDevice,
      ratio: tps !== undefined && torchTps !== undefined ? tps / torchTps : null,
    });
  }

  const failed = steps.filter((s) => s.status === 'failed').map((s) => s.name);
  const report = {
    mode: smoke ? 'smoke' : 'full',
    date: new Date().toISOString(),
    ok: failed.length === 0,
    failed,
    seconds: (Date.now() - started) / 1000,
    environment: {
      node: process.version,
      node_path: process.execPath,
      glibc,
      cpus: cpus().length,
      memory_gb: totalmem() / 1e9,
      nvidia_smi: nvidiaSmiList(),
      ld_library_path: process.env.LD_LIBRARY_PATH ?? null,
    },
    vulkan: icd,
    dawn_backend: dawnBackend,
    torch:
      torch === null
        ? null
        : `${torch.version} via ${torch.python}${torch.cuda ? ` on ${torch.gpu ?? 'cuda'}` : ' (no CUDA)'}${torchDevice === null ? ': skipped (no CUDA)' : ''}`,
    benchmark,
    steps,
  };
  writeJson(join(out, 'gpu-report.json'), report);
  const summary = summaryText(report, steps, icd);
  writeFileSync(join(out, 'summary.txt'), summary);
  process.stdout.write(summary);
  process.stdout.write(`report: ${join(out, 'gpu-report.json')}\n`);
  return failed.length === 0 ? 0 : 1;
}

// ------------------------------------------------------------------ dispatch

async function dispatch(): Promise<void> {
  if (command === 'main') {
    process.exitCode = main();
    return;
  }
  const resultFile = required('--result');
  let result: Record<string, unknown>;
  try {
    switch (command) {
      case 'adapters':
        result = await adaptersStep(flag('--gles'));
        break;
      case 'train':
        result = await trainStep(
          required('--bundle'),
          required('--out'),
          Number(required('--steps')),
        );
        break;
      case 'parity':
        result = await parityStep(required('--bundle'), option('--adapter') ?? null);
        break;
      case 'bench':
        result = await benchStep(
          JSON.parse(readFileSync(required('--target'), 'utf8')) as BenchTarget,
          required('--work'),
          Number(required('--steps')),
        );
        break;
      default:
        throw new Error(
          `unknown command ${command}; commands: main, adapters, train, parity, bench`,
        );
    }
  } catch (error) {
    result = { ok: false, error: errorText(error) };
    log(error instanceof Error ? (error.stack ?? error.message) : String(error));
  }
  writeJson(resultFile, result);
  // Dawn keeps handles open; the result is written, so leave now.
  process.exit(result.ok === false ? 1 : 0);
}

dispatch().catch((error: unknown) => {
  log(errorText(error));
  process.exit(2);
});
