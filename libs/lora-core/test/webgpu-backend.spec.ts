/**
 * The `webgpu` backend (Dawn) against the cpu backend and the PyTorch fixtures. Without a GPU
 * this runs on Dawn's OpenGL ES backend over Mesa llvmpipe (EGL_PLATFORM=surfaceless): the
 * same WGSL kernels tfjs-webgpu runs on a GPU, on a software rasteriser. Nothing is mocked.
 *
 * Tensors never cross backends here: tfjs moves them with a synchronous read, which webgpu
 * cannot do. Each comparison builds its inputs from plain arrays on both backends.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';

import {
  BackendError,
  SeededRandom,
  causalLmLoss,
  hfStateDict,
  initBackend,
  initWebgpuBackend,
  loadCausalLM,
  loadPeftAdapter,
  mergeAdapter,
  readSafetensors,
  runFineTune,
  saveHfModel,
  selectBackend,
  selectBackendFromEnv,
  type FineTuneResult,
  type WebgpuBackendInfo,
  webgpuDeviceErrors,
} from '../src';
import {
  FIXTURES,
  ids2d,
  maxAbsDiff,
  readExpected,
  readInputs,
  relativeError,
} from './fixture.helpers';
import { PAIRS, TINY_GPT2_DIR, pairsJsonl, testSpec } from './trainer.helpers';

jest.setTimeout(300_000);

/** ‖a − b‖/‖b‖ for matrix products (float32, different summation order). */
const MATMUL_REL_TOLERANCE = 1e-5;
/** Max |a − b| for element-wise and reduction kernels on O(1) inputs. */
const ELEMENTWISE_ABS_TOLERANCE = 1e-5;
/** PyTorch fixtures (float64 reference): the same bounds the cpu/wasm parity tests use. */
const LOGIT_TOLERANCE = 1e-4;
const GRADIENT_TOLERANCE = 1e-4;
const LOSS_TOLERANCE = 1e-5;
/** Per-step training loss, webgpu vs cpu, relative. */
const TRAIN_LOSS_REL_TOLERANCE = 1e-4;
/** Merged weights W0 + s·A·B, webgpu vs cpu: one add and a rank-r product per element. */
const MERGE_ABS_TOLERANCE = 1e-5;

let info: WebgpuBackendInfo;

/** Runs `fn` on `backend` and returns the values of the tensor it builds (read asynchronously). */
async function valuesOn(backend: 'cpu' | 'webgpu', fn: () => tf.Tensor): Promise<Float32Array> {
  if (backend === 'cpu') await initBackend('cpu');
  else await initWebgpuBackend();
  const out = tf.tidy(fn);
  const data = (await out.data()) as Float32Array;
  out.dispose();
  return data;
}

function randomArray(seed: number, count: number, std = 1): Float32Array {
  return new SeededRandom(seed).normal(count, std);
}

describe('initWebgpuBackend', () => {
  const saved = process.env.LORAFLEET_WEBGPU_BACKEND;
  afterEach(() => {
    if (saved === undefined) delete process.env.LORAFLEET_WEBGPU_BACKEND;
    else process.env.LORAFLEET_WEBGPU_BACKEND = saved;
  });

  it('rejects an unknown LORAFLEET_WEBGPU_BACKEND with a BackendError', async () => {
    process.env.LORAFLEET_WEBGPU_BACKEND = 'bogus';
    await expect(initWebgpuBackend()).rejects.toThrow(BackendError);
    await expect(initWebgpuBackend()).rejects.toThrow(/not a Dawn backend.*vulkan, opengles/);
  });

  it('activates webgpu on a Dawn adapter and says whether it is software', async () => {
    delete process.env.LORAFLEET_WEBGPU_BACKEND;
    info = await initWebgpuBackend();
    // Visible in the test output: which adapter this run measured.
    console.info(`webgpu adapter: ${info.adapter}; software: ${info.software}`);
    expect(info.backend).toBe('webgpu');
    expect(tf.getBackend()).toBe('webgpu');
    expect(info.adapter.length).toBeGreaterThan(0);
    if (/llvmpipe|lavapipe|swiftshader/i.test(info.adapter)) expect(info.software).toBe(true);
    // A second call reuses the device.
    expect(await initWebgpuBackend()).toBe(info);
  });

  it('LORAFLEET_BACKEND=webgpu selects it, and reports gpu only for a hardware adapter', async () => {
    delete process.env.LORAFLEET_WEBGPU_BACKEND;
    expect(await selectBackend('webgpu')).toBe('webgpu');
    const selected = await selectBackendFromEnv({ LORAFLEET_BACKEND: 'webgpu' });
    expect(selected).toEqual({ requested: 'webgpu', backend: 'webgpu', gpu: !info.software });
    expect(tf.getBackend()).toBe('webgpu');
  });
});

describe('webgpu kernels match the cpu backend', () => {
  const both = async (fn: () => tf.Tensor) => ({
    cpu: await valuesOn('cpu', fn),
    gpu: await valuesOn('webgpu', fn),
  });

  it.each([
    // [label, a shape, b shape, transposeA, transposeB]
    ['2-D', [37, 53], [53, 29], false, false],
    ['2-D, b transposed', [37, 53], [29, 53], false, true],
    ['2-D, a transposed', [53, 37], [53, 29], true, false],
    ['2-D, both transposed', [53, 37], [29, 53], true, true],
    ['batched', [3, 4, 17, 16], [3, 4, 16, 19], false, false],
    ['batched, b transposed (attention scores)', [3, 4, 17, 16], [3, 4, 19, 16], false, true],
    ['batched, a transposed (attention grads)', [3, 4, 16, 17], [3, 4, 16, 19], true, false],
    ['broadcast batch', [2, 17, 16], [16, 19], false, false],
  ] as Array<[string, number[], number[], boolean, boolean]>)(
    'matMul %s',
    async (_label, aShape, bShape, ta, tb) => {
      const a = randomArray(
        1,
        aShape.reduce((x, y) => x * y),
      );
      const b = randomArray(
        2,
        bShape.reduce((x, y) => x * y),
      );
      const { cpu, gpu } = await both(() =>
        tf.matMul(tf.tensor(a, aShape), tf.tensor(b, bShape), ta, tb),
      );
      expect(relativeError(gpu, cpu)).toBeLessThanOrEqual(MATMUL_REL_TOLERANCE);
    },
  );

  it('matMul gradients (dy·Bᵀ, Aᵀ·dy)', async () => {
    const a = randomArray(3, 24 * 40);
    const b = randomArray(4, 40 * 12);
    const grads = () => {
      const [ga, gb] = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.square(tf.matMul(x, y))))(
        [tf.tensor2d(a, [24, 40]), tf.tensor2d(b, [40, 12])],
      );
      return tf.concat([ga.flatten(), gb.flatten()]); // [24·40 + 40·12]
    };
    const { cpu, gpu } = await both(grads);
    expect(relativeError(gpu, cpu)).toBeLessThanOrEqual(MATMUL_REL_TOLERANCE);
  });

  it.each([
    ['softmax', (x: tf.Tensor) => tf.softmax(x)],
    ['logSoftmax', (x: tf.Tensor) => tf.logSoftmax(x)],
    [
      'tanh-GELU',
      (x: tf.Tensor) => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.tanh(tf.mul(x, 0.7978845608)))),
    ],
    ['sigmoid (SiLU gate)', (x: tf.Tensor) => tf.mul(x, tf.sigmoid(x))],
    [
      'layer-norm moments',
      (x: tf.Tensor) => {
        const { mean, variance } = tf.moments(x, -1, true); // [rows, 1] each
        return tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, 1e-5)));
      },
    ],
    [
      'rms-norm',
      (x: tf.Tensor) => tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), 1e-6))),
    ],
    ['sum / max over the last axis', (x: tf.Tensor) => tf.concat([tf.sum(x, -1), tf.max(x, -1)])],
  ] as Array<[string, (x: tf.Tensor) => tf.Tensor]>)('%s', async (_label, op) => {
    const x = randomArray(5, 23 * 269, 2);
    const { cpu, gpu } = await both(() => op(tf.tensor2d(x, [23, 269]))); // [23, 269]
    expect(maxAbsDiff(gpu, cpu)).toBeLessThanOrEqual(ELEMENTWISE_ABS_TOLERANCE);
  });

  it('addN over more inputs than storage-buffer bindings (chunked) matches cpu', async () => {
    // 40 terms: above maxStorageBuffersPerShaderStage − 1 on every adapter seen (7 or 15).
    const terms = Array.from({ length: 40 }, (_, i) => randomArray(100 + i, 33));
    const { cpu, gpu } = await both(() => tf.addN(terms.map((t) => tf.tensor1d(t)))); // [33]
    expect(maxAbsDiff(gpu, cpu)).toBeLessThanOrEqual(ELEMENTWISE_ABS_TOLERANCE);
  });

  it('gather (embedding lookup) and its gradient are exact', async () => {
    const table = randomArray(6, 50 * 8);
    const ids = [3, 0, 49, 3, 17, 17, 8];
    const { cpu, gpu } = await both(() => {
      const t = tf.tensor2d(table, [50, 8]);
      const looked = tf.gather(t, tf.tensor1d(ids, 'int32')); // [7, 8]
      const g = tf.grad((w: tf.Tensor) =>
        tf.sum(tf.mul(tf.gather(w, tf.tensor1d(ids, 'int32')), 1.5)),
      )(t); // [50, 8]
      return tf.concat([looked.flatten(), g.flatten()]);
    });
    expect(maxAbsDiff(gpu, cpu)).toBe(0);
  });
});

/** Measured errors, printed once at the end (the figures docs/gpu.md quotes). */
const figures: Record<string, number> = {};
afterAll(() => console.info(`webgpu figures: ${JSON.stringify(figures, null, 2)}`));

// A Dawn validation error means a kernel silently wrote nothing: every test must leave none.
afterEach(() => expect(webgpuDeviceErrors()).toEqual([]));

describe.each([
  'gpt2-tiny',
  'llama-tiny',
  // Issue 16's families: q/k/v biases, q/k norms, head_dim ≠ C/H, fused qkv/gate_up, soft-caps.
  'qwen2-tiny',
  'qwen3-tiny',
  'mistral-tiny',
  'phi3-tiny',
  'gemma2-tiny',
])('PyTorch parity on webgpu: %s', (name) => {
  const inputs = readInputs(name);
  const expected = readExpected(name);

  async function logitsOf(model: Awaited<ReturnType<typeof loadCausalLM>>, mask?: number[][]) {
    const logits = tf.tidy(() =>
      model.forward(ids2d(inputs.input_ids), mask ? tf.tensor2d(mask) : undefined),
    ); // [batch, seq, vocab]
    const data = (await logits.data()) as Float32Array;
    logits.dispose();
    return data;
  }

  it('base, left-padded and LoRA logits, loss and LoRA gradients hold', async () => {
    await initWebgpuBackend();
    const model = await loadCausalLM(join(FIXTURES, name));
    try {
      const base = maxAbsDiff(await logitsOf(model), expected.get('logits_base')!.data);
      figures[`${name}/logits_base/max_abs`] = base;
      expect(base).toBeLessThanOrEqual(LOGIT_TOLERANCE);

      // Only real (mask 1) query positions are defined, as in parity.spec.ts.
      const mask = inputs.left_padded_attention_mask;
      const vocab = model.config.vocabSize;
      const keep = (logits: ArrayLike<number>) =>
        Array.from(logits).filter((_, i) => mask.flat()[Math.floor(i / vocab)] === 1);
      const masked = maxAbsDiff(
        keep(await logitsOf(model, mask)),
        keep(expected.get('logits_masked')!.data),
      );
      figures[`${name}/logits_masked/max_abs`] = masked;
      expect(masked).toBeLessThanOrEqual(LOGIT_TOLERANCE);

      await loadPeftAdapter(model, 'ref', join(FIXTURES, `${name}-adapter`));
      const lora = maxAbsDiff(
        await logitsOf(model, inputs.attention_mask),
        expected.get('logits_lora')!.data,
      );
      figures[`${name}/logits_lora/max_abs`] = lora;
      expect(lora).toBeLessThanOrEqual(LOGIT_TOLERANCE);

      const ids = ids2d(inputs.input_ids); // [batch, seq]
      const attention = tf.tensor2d(inputs.attention_mask); // [batch, seq]
      const lossMask = tf.tensor2d(inputs.loss_mask); // [batch, seq]
      const named = model.namedTrainableVariables();
      const { value, grads } = tf.variableGrads(
        () => causalLmLoss(model.forward(ids, attention), ids, lossMask),
        [...named.values()],
      );
      const loss = Math.abs((await value.data())[0] - expected.get('loss_lora')!.data[0]);
      figures[`${name}/loss/abs`] = loss;
      expect(loss).toBeLessThanOrEqual(LOSS_TOLERANCE);

      let worst = 0;
      let checked = 0;
      for (const [varName, variable] of named) {
        const [, path, half] = /^(.+)\.(lora_A|lora_B)$/.exec(varName)!;
        const ref = expected.get(`grad.base_model.model.${path}.${half}.weight`)!;
        // tfjs gradients are [in, r] / [r, out]; the reference holds PEFT's transposes.
        const transposed = tf.transpose(grads[variable.name]); // [r, in] / [out, r]
        worst = Math.max(worst, relativeError(await transposed.data(), ref.data));
        transposed.dispose();
        checked++;
      }
      figures[`${name}/grad_max_rel`] = worst;
      expect(checked).toBe([...expected.keys()].filter((k) => k.startsWith('grad.')).length);
      expect(worst).toBeLessThanOrEqual(GRADIENT_TOLERANCE);
      tf.dispose([ids, attention, lossMask, value, ...Object.values(grads)]);
    } finally {
      model.dispose();
    }
  });
});

describe.each(['gpt2-tiny', 'llama-tiny', 'qwen2-tiny', 'phi3-tiny'])(
  'merge on webgpu: %s',
  (name) => {
    /** The fixture with its PEFT adapter loaded on the active backend (not merged yet). */
    async function withAdapter() {
      const model = await loadCausalLM(join(FIXTURES, name));
      await loadPeftAdapter(model, 'ref', join(FIXTURES, `${name}-adapter`));
      return model;
    }

    it('saveHfModel writes the weights the cpu merge gives (the lorafleet merge path)', async () => {
      await initBackend('cpu');
      const onCpu = await withAdapter();
      const base = await hfStateDict(onCpu);
      mergeAdapter(onCpu);
      const cpu = await hfStateDict(onCpu);
      onCpu.dispose();

      await initWebgpuBackend();
      const onGpu = await withAdapter();
      const dir = await mkdtemp(join(tmpdir(), 'lora-core-webgpu-merge-'));
      let written: ReturnType<typeof readSafetensors>['tensors'];
      try {
        mergeAdapter(onGpu);
        // Every host read of the export is asynchronous; a dataSync() here would throw.
        await saveHfModel(onGpu, dir, { companionsFrom: join(FIXTURES, name) });
        written = readSafetensors(await readFile(join(dir, 'model.safetensors'))).tensors;
      } finally {
        onGpu.dispose();
        await rm(dir, { recursive: true });
      }

      expect([...written.keys()].sort()).toEqual([...cpu.keys()].sort());
      let worst = 0;
      let moved = 0;
      for (const [key, ref] of cpu) {
        const got = written.get(key)!;
        expect(got.shape).toEqual(ref.shape);
        worst = Math.max(worst, maxAbsDiff(got.data, ref.data));
        moved = Math.max(moved, maxAbsDiff(ref.data, base.get(key)!.data));
      }
      figures[`${name}/merge_max_abs_vs_cpu`] = worst;
      // The adapter moves the weights far beyond the tolerance, so a merge that silently did
      // nothing (or a kernel that wrote zeros) on webgpu cannot pass.
      expect(moved).toBeGreaterThan(100 * MERGE_ABS_TOLERANCE);
      expect(worst).toBeLessThanOrEqual(MERGE_ABS_TOLERANCE);
    });
  },
);

describe('runFineTune on webgpu (models/tiny-random-gpt2)', () => {
  /** Exercises every host read of a run: eval + early-stopping snapshot, checkpoints, samples. */
  async function fineTune(): Promise<{ result: FineTuneResult; checkpoints: number }> {
    let checkpoints = 0;
    const result = await runFineTune({
      model: TINY_GPT2_DIR,
      trainJsonl: pairsJsonl(),
      validationJsonl: pairsJsonl(PAIRS.slice(0, 2)),
      spec: testSpec({
        seed: 1234,
        lora: { r: 4, alpha: 8, dropout: 0.1, target_modules: ['c_attn', 'c_fc'] },
        hyperparameters: { n_epochs: 1, batch_size: 2 },
        training: {
          learning_rate: 2e-2,
          warmup_steps: 0,
          weight_decay: 0.01,
          max_grad_norm: 1,
          eval_every_steps: 2,
        },
      }),
      earlyStopping: { patience: 10 },
      checkpoint: { everySteps: 2, sink: () => void checkpoints++ },
      samples: { count: 1, maxNewTokens: 4 },
    });
    return { result, checkpoints };
  }
  const losses = (r: FineTuneResult) => r.metrics.map((m) => m.trainLoss);

  it('trains: finite losses matching cpu, checkpoints, samples, deterministic', async () => {
    await initBackend('cpu');
    const cpu = await fineTune();

    await initWebgpuBackend();
    const started = performance.now();
    const first = await fineTune();
    const seconds = (performance.now() - started) / 1000;
    const second = await fineTune();

    expect(first.result.lineage.backend).toBe('webgpu');
    expect(first.result.steps).toBe(4);
    expect(first.checkpoints).toBe(2);
    expect(first.result.samples).toHaveLength(1);
    for (const loss of losses(first.result)) expect(Number.isFinite(loss)).toBe(true);

    const rel = Math.max(
      ...losses(first.result).map(
        (l, i) => Math.abs(l - losses(cpu.result)[i]) / Math.abs(losses(cpu.result)[i]),
      ),
    );
    figures['fineTune/train_loss_max_rel_vs_cpu'] = rel;
    figures['fineTune/webgpu_seconds_4_steps'] = seconds;
    expect(rel).toBeLessThanOrEqual(TRAIN_LOSS_REL_TOLERANCE);
    expect(first.result.validation!.loss).toBeCloseTo(cpu.result.validation!.loss, 4);

    // Same seed, same backend: identical losses and adapter bytes.
    expect(losses(second.result)).toEqual(losses(first.result));
    expect(
      Buffer.from(second.result.adapter.adapterSafetensors).equals(
        Buffer.from(first.result.adapter.adapterSafetensors),
      ),
    ).toBe(true);
    expect(second.result.samples).toEqual(first.result.samples);
  });
});
