/**
 * OpenBLAS matmul kernels (`wasm-blas`, `cpu-blas`): every transpose form and batch layout
 * autodiff produces must equal the stock tfjs kernel of the same backend, values and
 * gradients, and switching the kernels off must restore the stock path. Needs Debian's
 * libopenblas0-pthread (installed by tools/scripts/ensure-services.sh and .ci/run).
 */
import * as tf from '@tensorflow/tfjs';

import {
  BackendError,
  blasKernelsActive,
  blasProductCount,
  loadOpenBlas,
  selectBackend,
  setBlasKernels,
} from '../src';
import { relativeError } from './fixture.helpers';

/** float32 products summed in another order: relative error stays near 1e-7. */
const TOLERANCE = 1e-5;

function random(shape: number[], seed: number): tf.Tensor {
  return tf.randomNormal(shape, 0, 1, 'float32', seed);
}

/** Runs `f` with the stock kernel and with OpenBLAS on the current host backend. */
function bothWays(host: 'wasm' | 'cpu', f: () => tf.Tensor): [Float32Array, Float32Array] {
  setBlasKernels(host, false);
  const stock = tf.tidy(f);
  setBlasKernels(host, true);
  const blas = tf.tidy(f);
  const result: [Float32Array, Float32Array] = [
    stock.dataSync() as Float32Array,
    blas.dataSync() as Float32Array,
  ];
  expect(blas.shape).toEqual(stock.shape);
  stock.dispose();
  blas.dispose();
  return result;
}

describe.each(['wasm', 'cpu'] as const)('OpenBLAS kernels on %s', (host) => {
  beforeAll(async () => {
    expect(await selectBackend(`${host}-blas`)).toBe(`${host}-blas`);
    expect(blasKernelsActive(host)).toBe(true);
  });
  afterAll(() => setBlasKernels(host, false));

  const cases: Array<[string, number[], number[], boolean, boolean]> = [
    ['2-D plain', [7, 5], [5, 9], false, false],
    ['2-D aᵀ', [5, 7], [5, 9], true, false],
    ['2-D bᵀ', [7, 5], [9, 5], false, true],
    ['2-D aᵀ bᵀ', [5, 7], [9, 5], true, true],
    ['batched plain (attention scores·v)', [3, 4, 6, 8], [3, 4, 8, 6], false, false],
    ['batched bᵀ (q·kᵀ)', [3, 4, 6, 8], [3, 4, 6, 8], false, true],
    ['batched aᵀ', [2, 8, 6], [2, 8, 5], true, false],
    ['batch × shared b (folded)', [4, 6, 5], [5, 3], false, false],
    ['batch × shared bᵀ', [4, 6, 5], [3, 5], false, true],
    ['batch aᵀ × shared b', [4, 5, 6], [5, 3], true, false],
    ['shared a × batch b', [6, 5], [4, 5, 3], false, false],
    ['rank-3 · rank-4 broadcast (stock fallback)', [4, 6, 5], [2, 4, 5, 3], false, false],
    ['general broadcast (stock fallback)', [2, 1, 6, 5], [1, 3, 5, 4], false, false],
  ];

  it.each(cases)('%s equals the stock kernel', (name, aShape, bShape, transA, transB) => {
    const productsBefore = blasProductCount();
    const [stock, blas] = bothWays(host, () =>
      tf.matMul(random(aShape, 1), random(bShape, 2), transA, transB),
    );
    // Served by OpenBLAS, except the layout sgemm cannot express.
    expect(blasProductCount() - productsBefore).toBe(name.includes('fallback') ? 0 : 1);
    expect(blas.length).toBe(stock.length);
    expect(relativeError(blas, stock)).toBeLessThan(TOLERANCE);
  });

  it('an empty inner dimension gives zeros', () => {
    // (The stock wasm kernel leaves such an output uninitialised.)
    setBlasKernels(host, true);
    const out = tf.tidy(() => tf.matMul(tf.zeros([3, 0]), tf.zeros([0, 4])));
    expect(out.shape).toEqual([3, 4]);
    expect(Array.from(out.dataSync())).toEqual(new Array<number>(12).fill(0));
    out.dispose();
  });

  it('gradients of a batched product equal the stock kernel', () => {
    const grads = (): tf.Tensor => {
      const a = random([2, 3, 6, 8], 3);
      const b = random([2, 3, 6, 8], 4);
      const dy = random([2, 3, 6, 6], 5);
      const [ga, gb] = tf.grads((x: tf.Tensor, y: tf.Tensor) =>
        tf.sum(tf.mul(tf.matMul(x, y, false, true), dy)),
      )([a, b]);
      return tf.concat([ga.flatten(), gb.flatten()]);
    };
    const productsBefore = blasProductCount();
    const [stock, blas] = bothWays(host, grads);
    expect(blasProductCount() - productsBefore).toBe(3); // forward, dA, dB
    expect(relativeError(blas, stock)).toBeLessThan(TOLERANCE);
  });

  /** The unfused composition on the stock kernels: the meaning of each fused activation. */
  const ACTIVATIONS = {
    linear: (x: tf.Tensor) => x,
    relu: (x: tf.Tensor) => tf.relu(x),
    relu6: (x: tf.Tensor) => tf.relu6(x),
    elu: (x: tf.Tensor) => tf.elu(x),
    sigmoid: (x: tf.Tensor) => tf.sigmoid(x),
    leakyrelu: (x: tf.Tensor) => tf.leakyRelu(x, 0.1),
    prelu: (x: tf.Tensor) => tf.prelu(x, random([6], 9)),
  } as const;

  it.each(Object.keys(ACTIVATIONS) as Array<keyof typeof ACTIVATIONS>)(
    'fused matmul with bias and %s activation equals matMul + add + activation',
    (activation) => {
      // Compared with the unfused ops, not the stock fused kernel: tfjs-wasm 4.22's
      // _FusedMatMul mis-adds the bias when transposeB is set (relative error 0.38).
      setBlasKernels(host, false);
      const expected = tf.tidy(() =>
        ACTIVATIONS[activation](
          tf.add(tf.matMul(random([5, 4], 6), random([6, 4], 7), false, true), random([6], 8)),
        ),
      );
      setBlasKernels(host, true);
      const productsBefore = blasProductCount();
      const fused = tf.tidy(() =>
        tf.fused.matMul({
          a: random([5, 4], 6),
          b: random([6, 4], 7),
          transposeB: true,
          bias: random([6], 8),
          activation,
          preluActivationWeights: activation === 'prelu' ? random([6], 9) : undefined,
          leakyreluAlpha: 0.1,
        }),
      );
      expect(blasProductCount() - productsBefore).toBe(1);
      expect(relativeError(fused.dataSync(), expected.dataSync())).toBeLessThan(TOLERANCE);
      tf.dispose([fused, expected]);
    },
  );

  it('leaves no tensors or backend buffers behind', () => {
    setBlasKernels(host, true);
    const backend = tf.engine().backend;
    const tensorsBefore = tf.memory().numTensors;
    const buffersBefore = backend.numDataIds();
    tf.tidy(() => {
      // the fused path frees its intermediate product and bias sum itself
      tf.fused.matMul({
        a: random([3, 4], 1),
        b: random([4, 2], 2),
        bias: random([2], 3),
        activation: 'relu',
      });
      tf.matMul(random([2, 3, 4], 1), random([2, 4, 5], 2));
    });
    expect(tf.memory().numTensors).toBe(tensorsBefore);
    expect(backend.numDataIds()).toBe(buffersBefore);
  });

  it('plain `' + host + '` switches the stock kernel back on', async () => {
    expect(await selectBackend(host)).toBe(host);
    expect(blasKernelsActive(host)).toBe(false);
    expect(await selectBackend(`${host}-blas`)).toBe(`${host}-blas`);
  });
});

describe('OpenBLAS loading', () => {
  it('an explicit library that does not exist fails with what to install', () => {
    expect(() => loadOpenBlas({ LORAFLEET_OPENBLAS_LIB: '/nonexistent/libopenblas.so.0' })).toThrow(
      BackendError,
    );
    expect(() => loadOpenBlas({ LORAFLEET_OPENBLAS_LIB: '/nonexistent/libopenblas.so.0' })).toThrow(
      /\/nonexistent\/libopenblas\.so\.0.*apt-get install libopenblas0-pthread/,
    );
  });

  it('the installed library is found and reports its path', () => {
    const blas = loadOpenBlas();
    expect(blas.library).toMatch(/openblas/);
  });
});
