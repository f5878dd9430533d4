/**
 * The fused softmax cross-entropy WGSL kernels (backend/webgpu-cross-entropy.kernels.ts) on
 * webgpu (Dawn; llvmpipe without a GPU), against the tfjs ops they replace on the same backend
 * and against the cpu backend, then in the fused LM head of a training step.
 */
import * as tf from '@tensorflow/tfjs';

import {
  SeededRandom,
  crossEntropyGrad,
  crossEntropyRows,
  initBackend,
  initWebgpuBackend,
  measureWebgpuTraffic,
  webgpuDeviceErrors,
  type WebgpuTraffic,
} from '../src';
import { maxAbsDiff, relativeError } from './fixture.helpers';
import { cAttnTrainer, randomizeLoraB, tinyGpt2 } from './trainer.helpers';

jest.setTimeout(300_000);

/** NLL is log-sum-exp minus a logit: O(10) values, float32 sums in another order. */
const NLL_ABS_TOLERANCE = 1e-5;
/** softmax − onehot, scaled: entries of O(1). */
const GRAD_ABS_TOLERANCE = 1e-6;

afterEach(() => expect(webgpuDeviceErrors()).toEqual([]));

interface Case {
  logits: Float32Array; // [n, V]
  targets: Int32Array; // [n]
  scale: Float32Array; // [n]
  n: number;
  vocab: number;
}

/** Random logits with a tie for the maximum in rows 0 and 1 (target on the first and second). */
function makeCase(n: number, vocab: number, seed: number): Case {
  const rng = new SeededRandom(seed);
  const logits = rng.normal(n * vocab, 3);
  const targets = Int32Array.from({ length: n }, (_, r) => (r * 7919 + seed) % vocab);
  for (const row of [0, 1]) {
    const first = 3 + row;
    const second = vocab - 2;
    logits[row * vocab + first] = 50;
    logits[row * vocab + second] = 50;
    targets[row] = row === 0 ? first : second; // tf.argMax takes the first: a hit, then a miss
  }
  return { logits, targets, scale: rng.normal(n, 1), n, vocab };
}

/** The tfjs ops the kernels replace: [nll, hit] rows and the scaled logit gradient. */
function reference(c: Case): { rows: tf.Tensor2D; grad: tf.Tensor2D } {
  const logits = tf.tensor2d(c.logits, [c.n, c.vocab]); // [n, V]
  const targets = tf.tensor1d(c.targets, 'int32'); // [n]
  const picked = tf.sum(tf.mul(logits, tf.oneHot(targets, c.vocab)), 1); // [n]
  const nll = tf.sub(tf.logSumExp(logits, 1), picked); // [n]
  const hit = tf.cast(tf.equal(tf.argMax(logits, 1), targets), 'float32'); // [n]
  const grad = tf.mul<tf.Tensor2D>(
    tf.sub(tf.softmax(logits, 1), tf.oneHot(targets, c.vocab)),
    tf.tensor2d(c.scale, [c.n, 1]),
  ); // [n, V]
  return { rows: tf.stack([nll, hit], 1) as tf.Tensor2D, grad };
}

function fused(c: Case): { rows: tf.Tensor2D; grad: tf.Tensor2D } {
  const logits = tf.tensor2d(c.logits, [c.n, c.vocab]); // [n, V]
  const targets = tf.tensor1d(c.targets, 'int32'); // [n]
  return {
    rows: crossEntropyRows(logits, targets), // [n, 2]
    grad: crossEntropyGrad(logits, targets, tf.tensor1d(c.scale)), // [n, V]
  };
}

async function valuesOf(fn: () => { rows: tf.Tensor2D; grad: tf.Tensor2D }) {
  const { rows, grad } = tf.tidy(fn);
  const out = { rows: await rows.data(), grad: await grad.data() };
  tf.dispose([rows, grad]);
  return out;
}

describe('fused softmax cross-entropy kernels on webgpu', () => {
  // 64-wide workgroups below 4096 columns, 256 from there (a vocabulary).
  it.each([
    [5, 37],
    [9, 5003],
  ])(
    'rows × vocab %i × %i: NLL, argmax hit and gradient match the tfjs ops and cpu',
    async (n, vocab) => {
      const c = makeCase(n, vocab, vocab);
      await initBackend('cpu');
      const cpu = await valuesOf(() => reference(c));
      await initWebgpuBackend();
      const ops = await valuesOf(() => reference(c));
      const kernels = await valuesOf(() => fused(c));

      const nll = (rows: ArrayLike<number>) => Array.from(rows).filter((_, i) => i % 2 === 0);
      const hits = (rows: ArrayLike<number>) => Array.from(rows).filter((_, i) => i % 2 === 1);
      expect(maxAbsDiff(nll(kernels.rows), nll(ops.rows))).toBeLessThanOrEqual(NLL_ABS_TOLERANCE);
      expect(maxAbsDiff(nll(kernels.rows), nll(cpu.rows))).toBeLessThanOrEqual(NLL_ABS_TOLERANCE);
      // Exactly tf.argMax's choice, ties included: row 0 hits, row 1 misses.
      expect(hits(kernels.rows)).toEqual(hits(cpu.rows));
      expect(hits(kernels.rows).slice(0, 2)).toEqual([1, 0]);
      expect(maxAbsDiff(kernels.grad, ops.grad)).toBeLessThanOrEqual(GRAD_ABS_TOLERANCE);
      expect(maxAbsDiff(kernels.grad, cpu.grad)).toBeLessThanOrEqual(GRAD_ABS_TOLERANCE);
    },
  );
});

describe('the fused LM head on webgpu uses them', () => {
  /** Losses, gradients and traffic of three training steps, fused kernels on or off. */
  async function train(fusedCe: boolean) {
    const saved = process.env.LORAFLEET_WEBGPU_FUSED_CE;
    process.env.LORAFLEET_WEBGPU_FUSED_CE = fusedCe ? '1' : '0';
    const model = tinyGpt2();
    const trainer = await cAttnTrainer(model, 1, {
      seed: 5,
      hyperparameters: { n_epochs: 1, batch_size: 2 },
    });
    randomizeLoraB(model); // B = 0 would leave every lora_A gradient 0
    try {
      const { gradients } = await trainer.computeGradients([[0, 1]]);
      const losses: number[] = [];
      const traffic: WebgpuTraffic[] = [];
      for (let step = 0; step < 3; step++) {
        const measured = await measureWebgpuTraffic(() => trainer.trainStep());
        losses.push(measured.result.trainLoss);
        traffic.push(measured.traffic);
      }
      return { gradients, losses, traffic };
    } finally {
      trainer.dispose();
      model.dispose();
      if (saved === undefined) delete process.env.LORAFLEET_WEBGPU_FUSED_CE;
      else process.env.LORAFLEET_WEBGPU_FUSED_CE = saved;
    }
  }

  it('trains to the same losses and gradients with fewer dispatches', async () => {
    await initWebgpuBackend();
    const ops = await train(false);
    const kernels = await train(true);
    for (const [name, g] of ops.gradients) {
      expect(relativeError(kernels.gradients.get(name)!, g)).toBeLessThanOrEqual(1e-5);
    }
    for (const [i, loss] of ops.losses.entries()) {
      expect(Math.abs(kernels.losses[i] - loss) / loss).toBeLessThanOrEqual(1e-6);
    }
    console.info(
      `dispatches per step, tfjs ops → fused: ${ops.traffic[2].dispatches} → ${kernels.traffic[2].dispatches}`,
    );
    expect(kernels.traffic[2].dispatches).toBeLessThan(ops.traffic[2].dispatches);
  });
});
