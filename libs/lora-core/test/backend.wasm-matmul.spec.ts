/**
 * The wasm BatchMatMul fast path (backend/wasm-matmul.kernels.ts): every transpose form and
 * batch layout is rewritten into XNNPACK's plain 2-D form and must equal the stock kernel,
 * values and gradients; layouts it cannot map stay on the stock kernel.
 */
import * as tf from '@tensorflow/tfjs';

import { initBackend, wasmFastMatMulCount } from '../src';
import { relativeError } from './fixture.helpers';

const TOLERANCE = 1e-5;

function random(shape: number[], seed: number): tf.Tensor {
  return tf.randomNormal(shape, 0, 1, 'float32', seed);
}

/** `f` on the stock kernel (LORAFLEET_WASM_FAST_MATMUL=0) and on the fast path. */
function bothWays(f: () => tf.Tensor): {
  stock: Float32Array;
  fast: Float32Array;
  rewritten: number;
} {
  const saved = process.env.LORAFLEET_WASM_FAST_MATMUL;
  process.env.LORAFLEET_WASM_FAST_MATMUL = '0';
  const stock = tf.tidy(f);
  delete process.env.LORAFLEET_WASM_FAST_MATMUL;
  const before = wasmFastMatMulCount();
  const fast = tf.tidy(f);
  const rewritten = wasmFastMatMulCount() - before;
  if (saved !== undefined) process.env.LORAFLEET_WASM_FAST_MATMUL = saved;
  expect(fast.shape).toEqual(stock.shape);
  const result = {
    stock: stock.dataSync() as Float32Array,
    fast: fast.dataSync() as Float32Array,
    rewritten,
  };
  tf.dispose([stock, fast]);
  return result;
}

describe('wasm BatchMatMul fast path', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  const cases: Array<[string, number[], number[], boolean, boolean, boolean]> = [
    // name, a, b, transposeA, transposeB, rewritten
    ['2-D plain (already fast)', [7, 5], [5, 9], false, false, false],
    ['2-D aᵀ', [5, 7], [5, 9], true, false, true],
    ['2-D bᵀ', [7, 5], [9, 5], false, true, true],
    ['2-D aᵀ bᵀ', [5, 7], [9, 5], true, true, true],
    ['batched plain (scores·v)', [3, 4, 6, 8], [3, 4, 8, 6], false, false, true],
    ['batched bᵀ (q·kᵀ)', [3, 4, 6, 8], [3, 4, 6, 8], false, true, true],
    ['batched aᵀ', [2, 8, 6], [2, 8, 5], true, false, true],
    ['batch × shared b (folded)', [4, 6, 5], [5, 3], false, false, true],
    ['batch aᵀ × shared bᵀ', [4, 5, 6], [3, 5], true, true, true],
    ['shared a × batch b', [6, 5], [4, 5, 3], false, false, true],
    ['general broadcast (stock)', [2, 1, 6, 5], [1, 3, 5, 4], false, false, false],
  ];

  it.each(cases)(
    '%s equals the stock kernel',
    (_name, aShape, bShape, transA, transB, rewritten) => {
      const result = bothWays(() =>
        tf.matMul(random(aShape, 1), random(bShape, 2), transA, transB),
      );
      expect(result.rewritten).toBe(rewritten ? 1 : 0);
      expect(relativeError(result.fast, result.stock)).toBeLessThan(TOLERANCE);
    },
  );

  it('gradients of a batched q·kᵀ equal the stock kernel', () => {
    const result = bothWays(() => {
      const [ga, gb] = tf.grads((x: tf.Tensor, y: tf.Tensor) =>
        tf.sum(tf.mul(tf.matMul(x, y, false, true), random([2, 3, 6, 6], 5))),
      )([random([2, 3, 6, 8], 3), random([2, 3, 6, 8], 4)]);
      return tf.concat([ga.flatten(), gb.flatten()]);
    });
    expect(result.rewritten).toBe(3); // forward, dA (dy·b), dB (dyᵀ·a)
    expect(relativeError(result.fast, result.stock)).toBeLessThan(TOLERANCE);
  });

  it('leaves no tensors or wasm buffers behind', () => {
    const backend = tf.engine().backend;
    const tensors = tf.memory().numTensors;
    const buffers = backend.numDataIds();
    tf.tidy(() => {
      tf.matMul(random([3, 4, 6, 8], 1), random([3, 4, 6, 8], 2), false, true);
      tf.matMul(random([4, 5, 6], 1), random([3, 5], 2), true, true);
      tf.matMul(random([6, 5], 1), random([4, 5, 3], 2));
    });
    expect(tf.memory().numTensors).toBe(tensors);
    expect(backend.numDataIds()).toBe(buffers);
  });
});
