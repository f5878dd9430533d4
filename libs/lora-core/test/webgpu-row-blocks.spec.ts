/**
 * Weights past the device's binding limit, on webgpu (Dawn; llvmpipe without a GPU): stored as
 * row blocks (models/row-blocked.matrix.ts) and giving what the unsplit model gives. A GPU's
 * limit is far above a tiny model's weights, so `LORAFLEET_WEBGPU_MAX_BINDING_BYTES` lowers it
 * until every weight of the fixture must be split. Both sides of each comparison run on webgpu.
 * Also here: what one training step moves between host and GPU (measureWebgpuTraffic).
 */
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';

import {
  WEBGPU_MAX_BINDING_ENV,
  deviceBindingLimitBytes,
  hfStateDict,
  initWebgpuBackend,
  loadCausalLM,
  loadPeftAdapter,
  measureWebgpuTraffic,
  mergeAdapter,
  runFineTune,
  shiftTargets,
  webgpuDeviceErrors,
  type CausalLM,
  type FineTuneResult,
  type WebgpuTraffic,
} from '../src';
import { FIXTURES, ids2d, maxAbsDiff, readInputs, relativeError } from './fixture.helpers';
import { TINY_GPT2_DIR, cAttnTrainer, pairsJsonl, testSpec } from './trainer.helpers';

jest.setTimeout(300_000);

/** Below the fixtures' embeddings, lm_head and most projections (a 32×32 one is 4 KiB). */
const FIXTURE_CAP_BYTES = 3000;
/**
 * For the training run on tiny-random-gpt2: below its embedding (269×32 floats, 34 KiB) but
 * above its largest activation ([B·T, 128] for the ~20-token pairs at batch 2), which cannot
 * be split and so must fit.
 */
const TRAINING_CAP_BYTES = 24 * 1024;
/**
 * Logits and losses, max abs: a split linear multiplies by its weight in nn.Linear layout
 * (x·Wᵀ, another WGSL matmul variant than x·W), so float32 rounding differs slightly.
 */
const LOGIT_TOLERANCE = 1e-5;
/** Gradients go through Σ over blocks (another summation order). */
const GRADIENT_REL_TOLERANCE = 1e-5;
const MERGE_ABS_TOLERANCE = 1e-6;
const TRAIN_LOSS_REL_TOLERANCE = 1e-5;

afterEach(() => expect(webgpuDeviceErrors()).toEqual([]));

/** Runs `fn` with the binding limit capped at `cap` bytes (null: the adapter's own). */
async function withBindingCap<T>(cap: number | null, fn: () => Promise<T>): Promise<T> {
  const saved = process.env[WEBGPU_MAX_BINDING_ENV];
  if (cap === null) delete process.env[WEBGPU_MAX_BINDING_ENV];
  else process.env[WEBGPU_MAX_BINDING_ENV] = String(cap);
  try {
    return await fn();
  } finally {
    if (saved === undefined) delete process.env[WEBGPU_MAX_BINDING_ENV];
    else process.env[WEBGPU_MAX_BINDING_ENV] = saved;
  }
}

async function read(t: tf.Tensor): Promise<Float32Array> {
  const data = (await t.data()) as Float32Array;
  t.dispose();
  return data;
}

interface FixtureRun {
  blocks: Map<string, number>;
  logitsBase: Float32Array;
  logitsLora: Float32Array;
  nll: number;
  grads: Map<string, Float32Array>;
  merged: Map<string, Float32Array>;
}

/** Everything the model computes on `name`'s inputs, with the limit capped at `cap`. */
function fixtureRun(name: string, cap: number | null): Promise<FixtureRun> {
  return withBindingCap(cap, async () => {
    const inputs = readInputs(name);
    const model: CausalLM = await loadCausalLM(join(FIXTURES, name));
    try {
      const blocks = new Map(model.baseParameters().map((p) => [p.key, p.blocks]));
      const ids = ids2d(inputs.input_ids); // [B, T]
      const mask = tf.tensor2d(inputs.attention_mask); // [B, T]
      const logitsBase = await read(model.forward(ids, mask)); // [B, T, V]
      await loadPeftAdapter(model, 'ref', join(FIXTURES, `${name}-adapter`));
      const logitsLora = await read(model.forward(ids, mask)); // [B, T, V]

      // The training loss: the fused, chunked head and its hand-written gradient.
      const shifted = shiftTargets(inputs.input_ids, inputs.loss_mask, model.config.vocabSize);
      const named = model.namedTrainableVariables();
      const { value, grads } = tf.variableGrads(
        () => model.forwardLoss(ids, mask, shifted, { training: false }).nll,
        [...named.values()],
      );
      const gradData = new Map<string, Float32Array>();
      for (const [key, variable] of named) gradData.set(key, await read(grads[variable.name]));
      const nll = (await read(value))[0];
      tf.dispose([ids, mask]);

      mergeAdapter(model);
      const merged = new Map(
        [...(await hfStateDict(model))].map(([key, tensor]) => [key, tensor.data]),
      );
      return { blocks, logitsBase, logitsLora, nll, grads: gradData, merged };
    } finally {
      model.dispose();
    }
  });
}

describe.each(['gpt2-tiny', 'llama-tiny'])('row-blocked weights on webgpu: %s', (name) => {
  it('splits every weight past a forced binding limit and computes what the unsplit model does', async () => {
    await initWebgpuBackend();
    const whole = await fixtureRun(name, null);
    const split = await fixtureRun(name, FIXTURE_CAP_BYTES);

    for (const count of whole.blocks.values()) expect(count).toBe(1);
    // The embedding and every linear weight (lm_head too, untied in llama-tiny) are now
    // blocks of at most the cap: a [R, K] matrix takes ⌈R / ⌊cap / 4K⌋⌉ of them.
    const model = await withBindingCap(FIXTURE_CAP_BYTES, () => loadCausalLM(join(FIXTURES, name)));
    try {
      const splitKeys: string[] = [];
      for (const p of model.baseParameters()) {
        if (p.hfShape.length !== 2 || p.key.endsWith('wpe.weight')) continue;
        // Rows are tokens for the embedding, output features for a linear weight: the first
        // axis of nn.Linear's [out, in] (transposed in tfjs), the second of Conv1D's [in, out].
        const embedding = /wte|embed_tokens/.test(p.key);
        const [rows, cols] = p.transposed || embedding ? p.hfShape : [p.hfShape[1], p.hfShape[0]];
        if (rows * cols * 4 <= FIXTURE_CAP_BYTES) {
          expect(p.blocks).toBe(1); // within the limit: one tensor, as before
          continue;
        }
        const perBlock = Math.floor(FIXTURE_CAP_BYTES / (cols * 4));
        expect(p.blocks).toBe(Math.ceil(rows / perBlock));
        expect(() => p.tensor()).toThrow(/not one tensor/);
        splitKeys.push(p.key);
      }
      expect(splitKeys.some((k) => /embed_tokens|wte/.test(k))).toBe(true);
      expect(splitKeys.some((k) => /mlp/.test(k))).toBe(true);
      if (name === 'llama-tiny') expect(splitKeys).toContain('lm_head.weight');
    } finally {
      model.dispose();
    }

    expect(maxAbsDiff(split.logitsBase, whole.logitsBase)).toBeLessThanOrEqual(LOGIT_TOLERANCE);
    expect(maxAbsDiff(split.logitsLora, whole.logitsLora)).toBeLessThanOrEqual(LOGIT_TOLERANCE);
    // The adapter moves the logits well past the tolerance: the blocks' LoRA path is live.
    expect(maxAbsDiff(whole.logitsLora, whole.logitsBase)).toBeGreaterThan(100 * LOGIT_TOLERANCE);
    expect(Math.abs(split.nll - whole.nll) / Math.abs(whole.nll)).toBeLessThanOrEqual(
      LOGIT_TOLERANCE,
    );
    expect([...split.grads.keys()]).toEqual([...whole.grads.keys()]);
    for (const [key, grad] of whole.grads) {
      expect(relativeError(split.grads.get(key)!, grad)).toBeLessThanOrEqual(
        GRADIENT_REL_TOLERANCE,
      );
    }
    // Merging folds A·B into each block; the merged model reads back in Hugging Face layout.
    expect([...split.merged.keys()].sort()).toEqual([...whole.merged.keys()].sort());
    for (const [key, data] of whole.merged) {
      expect(maxAbsDiff(split.merged.get(key)!, data)).toBeLessThanOrEqual(MERGE_ABS_TOLERANCE);
    }
  });
});

describe('training with a split embedding on webgpu (models/tiny-random-gpt2)', () => {
  function fineTune(cap: number | null): Promise<FineTuneResult> {
    return withBindingCap(cap, () =>
      runFineTune({
        model: TINY_GPT2_DIR,
        trainJsonl: pairsJsonl(),
        spec: testSpec({
          seed: 99,
          lora: { r: 4, alpha: 8, dropout: 0, target_modules: ['c_attn', 'c_fc'] },
          hyperparameters: { n_epochs: 1, batch_size: 2 },
          training: { learning_rate: 2e-2 },
        }),
        samples: { count: 1, maxNewTokens: 4 },
      }),
    );
  }

  it('trains to the unsplit run’s losses and samples', async () => {
    await initWebgpuBackend();
    const whole = await fineTune(null);
    const split = await fineTune(TRAINING_CAP_BYTES);
    const losses = (r: FineTuneResult) => r.metrics.map((m) => m.trainLoss);
    expect(split.steps).toBe(4);
    for (const [i, loss] of losses(split).entries()) {
      expect(Math.abs(loss - losses(whole)[i]) / losses(whole)[i]).toBeLessThanOrEqual(
        TRAIN_LOSS_REL_TOLERANCE,
      );
    }
    expect(split.samples).toEqual(whole.samples);
  });

  it('is refused before loading when an activation cannot fit the limit, naming both sizes', async () => {
    await initWebgpuBackend();
    // 16 KiB holds the split embedding's blocks, but not the MLP's [B·T, 128] output at batch
    // 8: activations cannot be split (weights can).
    const run = withBindingCap(16 * 1024, () =>
      runFineTune({
        model: TINY_GPT2_DIR,
        trainJsonl: pairsJsonl(),
        spec: testSpec({ hyperparameters: { batch_size: 8 } }),
        samples: false,
      }),
    );
    await expect(run).rejects.toThrow(
      /the c_fc output \[\d+, 128\] needs \d+ KiB in one buffer, more than the 16 KiB this webgpu adapter can bind/,
    );
  });
});

describe('host–GPU traffic of a training step on webgpu', () => {
  async function stepTraffic(cap: number | null): Promise<WebgpuTraffic[]> {
    return withBindingCap(cap, async () => {
      const model = await loadCausalLM(TINY_GPT2_DIR);
      const trainer = await cAttnTrainer(model, 1, {
        seed: 5,
        hyperparameters: { n_epochs: 1, batch_size: 2 },
        training: { learning_rate: 1e-2 },
      });
      try {
        const out: WebgpuTraffic[] = [];
        for (let step = 0; step < 3; step++) {
          out.push((await measureWebgpuTraffic(() => trainer.trainStep())).traffic);
        }
        return out;
      } finally {
        trainer.dispose();
        model.dispose();
      }
    });
  }

  it('reads one 3-float result back per step and uploads no weight after the first', async () => {
    await initWebgpuBackend();
    const limit = deviceBindingLimitBytes()!;
    for (const cap of [null, TRAINING_CAP_BYTES]) {
      const [first, ...later] = await stepTraffic(cap);
      console.info(
        `webgpu step traffic (cap ${cap ?? limit}): ${JSON.stringify({ first, later })}`,
      );
      // The first step uploads the weights (tfjs uploads a tensor on first use): the whole
      // [269, 32] embedding, or with the cap, blocks of at most the cap.
      if (cap === null) expect(first.largestUploadBytes).toBe(269 * 32 * 4);
      else expect(first.largestUploadBytes).toBeLessThanOrEqual(cap);
      for (const t of later) {
        // One host read: loss, correct-token count and Σ‖g‖² packed together (trainer.ts).
        expect(t.downloads).toBe(1);
        expect(t.downloadBytes).toBe(3 * 4);
        // Only the batch goes up (ids, mask, targets, weights, small constants): every upload
        // is smaller than the smallest weight (the 32×32 c_proj, 4 KiB).
        expect(t.largestUploadBytes).toBeLessThan(32 * 32 * 4);
        expect(t.dispatches).toBeGreaterThan(0);
      }
    }
  });
});
