/**
 * The wasm Slice/SplitV replacements (backend/wasm-slice.kernels.ts) copy from a heap view
 * instead of the stock whole-input copy; their output must equal the cpu backend's exactly.
 */
import * as tf from '@tensorflow/tfjs';

import { initBackend } from '../src';

async function onBackend(
  name: 'cpu' | 'wasm',
  f: () => tf.Tensor | tf.Tensor[],
): Promise<number[][]> {
  await tf.setBackend(name);
  return tf.tidy(() => {
    const result = f();
    return (Array.isArray(result) ? result : [result]).map((t) => Array.from(t.dataSync()));
  });
}

/** Distinct values so a misplaced element cannot go unnoticed. */
function ramp(shape: number[], dtype: 'float32' | 'int32' = 'float32'): tf.Tensor {
  const size = shape.reduce((p, v) => p * v, 1);
  return tf.tensor(
    Array.from({ length: size }, (_, i) => i),
    shape,
    dtype,
  );
}

describe('wasm Slice and SplitV from heap views', () => {
  beforeAll(async () => {
    await initBackend('cpu');
    await initBackend('wasm');
  });

  const slices: Array<[string, number[], number[], number[]]> = [
    ['1-D', [10], [3], [4]],
    ['2-D rows (contiguous)', [6, 5], [2, 0], [3, 5]],
    ['2-D columns', [6, 5], [1, 2], [4, 2]],
    ['3-D inner box', [4, 5, 6], [1, 2, 3], [2, 3, 2]],
    ['3-D last axis (q/k/v style)', [2, 3, 12], [0, 0, 4], [2, 3, 4]],
    ['4-D mixed', [2, 3, 4, 5], [1, 0, 1, 2], [1, 3, 2, 3]],
    ['5-D', [2, 2, 3, 2, 3], [0, 1, 1, 0, 1], [2, 1, 2, 2, 2]],
    ['size -1 to the end', [4, 6], [1, 2], [-1, -1]],
    ['empty', [4, 6], [1, 2], [0, 3]],
  ];

  it.each(slices)('%s equals the cpu backend', async (_name, shape, begin, size) => {
    for (const dtype of ['float32', 'int32'] as const) {
      const expected = await onBackend('cpu', () => tf.slice(ramp(shape, dtype), begin, size));
      const actual = await onBackend('wasm', () => tf.slice(ramp(shape, dtype), begin, size));
      expect(actual).toEqual(expected);
    }
  });

  it('split into sizes and into equal parts along any axis equals the cpu backend', async () => {
    for (const [shape, splits, axis] of [
      [[2, 3, 12], [4, 4, 4], 2],
      [[2, 3, 12], 3, -1],
      [[6, 4], [1, 2, 3], 0],
      [[2, 6, 3], [2, -1], 1],
    ] as Array<[number[], number | number[], number]>) {
      const expected = await onBackend('cpu', () => tf.split(ramp(shape), splits, axis));
      const actual = await onBackend('wasm', () => tf.split(ramp(shape), splits, axis));
      expect(actual).toEqual(expected);
    }
  });

  it('gradients through a split equal the cpu backend', async () => {
    const gradient = () =>
      tf.grad((x: tf.Tensor) => {
        const [q, k, v] = tf.split(x, 3, -1);
        return tf.sum(tf.add(tf.mul(q, 2), tf.mul(k, v)));
      })(ramp([2, 2, 6]));
    expect(await onBackend('wasm', gradient)).toEqual(await onBackend('cpu', gradient));
  });
});
