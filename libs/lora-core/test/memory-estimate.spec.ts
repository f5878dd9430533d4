/**
 * The pre-flight (issue 13): the memory estimate and its limit, and the refusals that
 * `runFineTune` raises before any weight is read (a model directory whose weights file is
 * garbage proves nothing was loaded).
 */
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import {
  MODEL_SHAPES,
  DeviceBufferLimitError,
  DeviceMemoryLimitError,
  MemoryLimitError,
  NoTrainableTokensError,
  WasmHeapLimitError,
  checkWebgpuFits,
  estimateTrainingMemory,
  gpuMemoryLimitMbFromEnv,
  largestTrainingBuffer,
  webgpuDeviceBytes,
  initBackend,
  initWebgpuBackend,
  selectBackend,
  setBlasKernels,
  memoryAdvice,
  memoryLimitMbFromEnv,
  parseModelConfig,
  runFineTune,
  type MemoryEstimateInput,
} from '../src';
import { TINY_GPT2_DIR, testSpec } from './trainer.helpers';
import { modelFactsFromConfig, trainingMemoryInput } from '@lorafleet/data';

const MIB = 1024 * 1024;

function input(
  shape: keyof typeof MODEL_SHAPES,
  overrides: Partial<MemoryEstimateInput> = {},
): MemoryEstimateInput {
  const config = parseModelConfig(MODEL_SHAPES[shape].config);
  return {
    config,
    batchSize: 4,
    seqLength: 256,
    lora: { r: 8, targetModules: config.modelType === 'gpt2' ? ['c_attn'] : ['q_proj', 'v_proj'] },
    weightBytesPerParameter: 4,
    gradientCheckpointing: false,
    ...overrides,
  };
}

describe('memory estimate', () => {
  it('grows with batch and sequence, and gradient checkpointing shrinks the activations', () => {
    const base = estimateTrainingMemory(input('gpt2-small'));
    expect(
      estimateTrainingMemory(input('gpt2-small', { batchSize: 8 })).totalBytes,
    ).toBeGreaterThan(base.totalBytes);
    expect(
      estimateTrainingMemory(input('gpt2-small', { seqLength: 512 })).totalBytes,
    ).toBeGreaterThan(base.totalBytes);
    const checkpointed = estimateTrainingMemory(
      input('gpt2-small', { gradientCheckpointing: true }),
    );
    expect(checkpointed.parts.activations).toBeLessThan(base.parts.activations / 4);
    // 124.4M parameters in f32 on the host.
    expect(base.parts.frozenWeights / MIB).toBeCloseTo((124_439_808 * 4) / MIB, 0);
  });

  it('stays above what the shapes measured on this machine (docs/benchmarks.md), within 1.4×', () => {
    // Peak RSS of `lorafleet train` on wasm-blas, seq 256 (2026-12-05): the estimate must
    // admit nothing that does not fit, and not refuse much that does.
    const measured: Array<[keyof typeof MODEL_SHAPES, number, number]> = [
      ['gpt2-small', 4, 2081],
      ['smollm2-135m', 4, 2893],
      ['llama-0.5b', 2, 3622],
      ['llama-1b', 1, 6013],
    ];
    for (const [shape, batchSize, peakMb] of measured) {
      const estimateMb = estimateTrainingMemory(input(shape, { batchSize })).totalBytes / MIB;
      expect({ shape, over: estimateMb >= peakMb, within: estimateMb <= 1.4 * peakMb }).toEqual({
        shape,
        over: true,
        within: true,
      });
    }
  });

  it('advice names what helps: weights over the limit, else checkpointing, batch and length', () => {
    expect(memoryAdvice(input('llama-1b', { batchSize: 1 }), 4096)).toMatch(
      /frozen base weights alone take about 4,7\d\d MiB/,
    );
    const tips = memoryAdvice(input('gpt2-small'), 1500);
    expect(tips).toMatch(/^To fit: turn on gradient checkpointing/);
    expect(tips).toMatch(/lower the batch size \(now 4\)/);
    expect(
      memoryAdvice(input('gpt2-small', { gradientCheckpointing: true, batchSize: 1 })),
    ).not.toMatch(/checkpointing|batch size/);
  });

  it('LORAFLEET_MEMORY_LIMIT_MB: a whole number of MiB, else the machine default', () => {
    expect(memoryLimitMbFromEnv({ LORAFLEET_MEMORY_LIMIT_MB: '4096' })).toBe(4096);
    expect(() => memoryLimitMbFromEnv({ LORAFLEET_MEMORY_LIMIT_MB: '4g' })).toThrow(
      /LORAFLEET_MEMORY_LIMIT_MB="4g" must be a positive whole number of MiB/,
    );
    expect(memoryLimitMbFromEnv({})).toBeGreaterThan(0);
  });
});

describe('one estimator for the trainer and the API (issue 20)', () => {
  it.each(Object.keys(MODEL_SHAPES) as (keyof typeof MODEL_SHAPES)[])(
    '%s: config.json facts (libs/data, no tfjs) estimate exactly what the parsed config does',
    (shape) => {
      const json = MODEL_SHAPES[shape].config;
      const spec = testSpec({
        hyperparameters: { batch_size: 3 },
        training: { max_seq_length: 256, gradient_checkpointing: shape !== 'gpt2-small' },
      });
      const summary = { examples: 10, longestKeptTokens: 200 };
      const fromFacts = trainingMemoryInput(
        spec,
        summary,
        modelFactsFromConfig(json).trainingShape,
      );
      const fromTrainer = trainingMemoryInput(spec, summary, parseModelConfig(json));
      expect(fromFacts.batchSize).toBe(3);
      expect(fromFacts.seqLength).toBe(200);
      expect(estimateTrainingMemory(fromFacts)).toEqual(estimateTrainingMemory(fromTrainer));
      expect(estimateTrainingMemory(fromFacts).totalBytes).toBeGreaterThan(400 * MIB);
    },
  );
});

describe('webgpu pre-flight: binding limit and GPU memory', () => {
  it('gpt2-small fits a 128 MiB binding: its 154 MB embedding is split, an activation is the largest buffer', () => {
    const run = input('gpt2-small');
    const largest = largestTrainingBuffer(run);
    // [B, H, T, T] scores and the c_fc output [B·T, 4C] are both 12 MiB at 4 × 256.
    expect(largest).toEqual({
      what: 'the attention scores [4, 12, 256, 256]',
      bytes: 4 * 12 * 256 * 256 * 4,
    });
    const estimate = estimateTrainingMemory(run);
    // On the GPU: everything but the host runtime, the weights included.
    expect(webgpuDeviceBytes(estimate)).toBe(estimate.totalBytes - estimate.parts.runtime);
    expect(webgpuDeviceBytes(estimate)).toBeGreaterThan(estimate.parts.frozenWeights);
    expect(() =>
      checkWebgpuFits(run, estimate, { bindingLimitBytes: 128 * MIB, memoryLimitMb: 80 * 1024 }),
    ).not.toThrow();

    expect(() =>
      checkWebgpuFits(run, estimate, { bindingLimitBytes: 8 * MIB, memoryLimitMb: null }),
    ).toThrow(
      /the attention scores \[4, 12, 256, 256\] needs 12 MiB in one buffer, more than the 8 MiB this webgpu adapter can bind/,
    );
    const deviceMb = Math.ceil(webgpuDeviceBytes(estimate) / MIB);
    const tooSmall = () =>
      checkWebgpuFits(run, estimate, { bindingLimitBytes: 128 * MIB, memoryLimitMb: deviceMb - 1 });
    expect(tooSmall).toThrow(DeviceMemoryLimitError);
    expect(tooSmall).toThrow(
      new RegExp(
        `needs about ${deviceMb.toLocaleString('en-US')} MiB of GPU memory .* the GPU has`,
      ),
    );
  });

  it('an adapter on lm_head makes whole logits, which must fit one buffer', () => {
    // smollm2-135m untied, so that lm_head is a linear layer an adapter can target.
    const config = parseModelConfig({
      ...MODEL_SHAPES['smollm2-135m'].config,
      tie_word_embeddings: false,
    });
    const run = { ...input('smollm2-135m'), config, lora: { r: 8, targetModules: ['lm_head'] } };
    expect(largestTrainingBuffer(run)).toEqual({
      what: 'the logits [1024, 49152] (an adapter on lm_head or a soft-capped head makes them whole)',
      bytes: 1024 * 49152 * 4,
    });
  });

  it('LORAFLEET_GPU_MEMORY_MB: a whole number of MiB, else unknown (WebGPU reports no total)', () => {
    expect(gpuMemoryLimitMbFromEnv({ LORAFLEET_GPU_MEMORY_MB: '81559' })).toBe(81559);
    expect(gpuMemoryLimitMbFromEnv({})).toBeNull();
    expect(() => gpuMemoryLimitMbFromEnv({ LORAFLEET_GPU_MEMORY_MB: '80GB' })).toThrow(
      /LORAFLEET_GPU_MEMORY_MB="80GB" must be a positive whole number of MiB/,
    );
  });
});

describe('runFineTune pre-flight refusals, before any weight is read', () => {
  let dir: string;
  beforeAll(async () => {
    await initBackend('cpu');
    dir = await mkdtemp(join(tmpdir(), 'lora-core-preflight-'));
    await mkdir(join(dir, 'model'));
    for (const file of ['config.json', 'tokenizer.json']) {
      await copyFile(join(TINY_GPT2_DIR, file), join(dir, 'model', file));
    }
    // Not a safetensors file: any attempt to load weights would fail with another error.
    await writeFile(join(dir, 'model', 'model.safetensors'), 'garbage');
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  const jsonl = (prompt: string, completion: string) =>
    `${Array.from({ length: 3 }, () => JSON.stringify({ prompt, completion })).join('\n')}\n`;

  it('refuses a run over the memory limit with the estimate, the limit and the advice', async () => {
    const run = runFineTune({
      model: join(dir, 'model'),
      trainJsonl: jsonl('Say hi:', ' hi'),
      spec: testSpec(),
      memoryLimitMb: 1,
      samples: false,
    });
    await expect(run).rejects.toBeInstanceOf(MemoryLimitError);
    await expect(run).rejects.toThrow(/needs about [\d,]+ MiB but the memory limit is 1 MiB/);
  });

  it('refuses data whose every completion is cut by max_seq_length, with the counts', async () => {
    const run = runFineTune({
      model: join(dir, 'model'),
      trainJsonl: jsonl('a very long prompt '.repeat(20), ' done'),
      spec: testSpec({ training: { max_seq_length: 8 } }),
      samples: false,
    });
    await expect(run).rejects.toBeInstanceOf(NoTrainableTokensError);
    await expect(run).rejects.toThrow(/3 of 3 examples lose every target token to truncation/);
  });

  it('refuses a run whose activations cannot fit the 4 GiB wasm heap, on wasm-blas', async () => {
    // GPT-2 small's widths over the tiny tokenizer: seq 1024 at batch 16 needs far more
    // than the wasm backend can address, whatever LORAFLEET_MEMORY_LIMIT_MB says.
    const big = join(dir, 'wide');
    await mkdir(big);
    await copyFile(join(TINY_GPT2_DIR, 'tokenizer.json'), join(big, 'tokenizer.json'));
    await writeFile(join(big, 'model.safetensors'), 'garbage');
    await writeFile(
      join(big, 'config.json'),
      JSON.stringify({
        model_type: 'gpt2',
        n_embd: 768,
        n_layer: 12,
        n_head: 12,
        n_positions: 1024,
        vocab_size: 269,
      }),
    );
    expect(await selectBackend('wasm-blas')).toBe('wasm-blas');
    try {
      const run = runFineTune({
        model: big,
        trainJsonl: `${Array.from({ length: 16 }, () => JSON.stringify({ prompt: 'Go:', completion: ' a b'.repeat(800) })).join('\n')}\n`,
        spec: testSpec({
          hyperparameters: { batch_size: 16 },
          training: { max_seq_length: 1024 },
        }),
        memoryLimitMb: 1_000_000,
        samples: false,
      });
      await expect(run).rejects.toBeInstanceOf(WasmHeapLimitError);
      await expect(run).rejects.toThrow(
        /MiB of activations and adapter state in the wasm heap, more than the 3,840 MiB/,
      );
      await expect(run).rejects.toThrow(/To fit: turn on gradient checkpointing/);
    } finally {
      setBlasKernels('wasm', false);
      await initBackend('cpu');
    }
  });

  it('on webgpu admits an embedding past the binding limit (it is split) and refuses a run past LORAFLEET_GPU_MEMORY_MB', async () => {
    expect(await selectBackend('webgpu')).toBe('webgpu');
    const saved = process.env.LORAFLEET_GPU_MEMORY_MB;
    try {
      // An embedding one step past this adapter's maxStorageBufferBindingSize (128 MiB on
      // llvmpipe): before row blocks it could never have been bound, now it is split.
      const { limits } = await initWebgpuBackend();
      // Wide enough that the vocabulary stays within config.json's bounds on any adapter.
      const width = Math.max(
        64,
        2 ** Math.ceil(Math.log2(limits.maxStorageBufferBindingSize / 4e6)),
      );
      const vocab = Math.ceil(limits.maxStorageBufferBindingSize / (width * 4)) + 1024;
      const wide = join(dir, 'webgpu-wide');
      await mkdir(wide);
      await copyFile(join(TINY_GPT2_DIR, 'tokenizer.json'), join(wide, 'tokenizer.json'));
      await writeFile(join(wide, 'model.safetensors'), 'garbage');
      await writeFile(
        join(wide, 'config.json'),
        JSON.stringify({
          model_type: 'gpt2',
          n_embd: width,
          n_layer: 1,
          n_head: 2,
          n_positions: 64,
          vocab_size: vocab,
        }),
      );
      const fineTune = () =>
        runFineTune({
          model: wide,
          trainJsonl: jsonl('Say hi:', ' hi'),
          spec: testSpec(),
          samples: false,
        });
      // Past the pre-flight: it fails reading the garbage weights file.
      const admitted = fineTune();
      await expect(admitted).rejects.not.toBeInstanceOf(DeviceBufferLimitError);
      await expect(admitted).rejects.toThrow(/safetensors|header/i);

      process.env.LORAFLEET_GPU_MEMORY_MB = '64';
      const refused = fineTune();
      await expect(refused).rejects.toBeInstanceOf(DeviceMemoryLimitError);
      await expect(refused).rejects.toThrow(/MiB of GPU memory .* the GPU has 64 MiB/);
    } finally {
      if (saved === undefined) delete process.env.LORAFLEET_GPU_MEMORY_MB;
      else process.env.LORAFLEET_GPU_MEMORY_MB = saved;
      await initBackend('cpu');
    }
  });
});
