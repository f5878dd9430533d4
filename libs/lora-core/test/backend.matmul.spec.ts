/**
 * The products in backend/matmul.ops.ts route around the wasm backend's slow MatMul path
 * with explicit transposes and hand-written gradients; values and gradients must equal
 * plain `tf.matMul` autodiff (float32 rounding aside).
 */
import * as tf from '@tensorflow/tfjs';

import { frozenMatMul, initBackend, matMul2d, tiedHeadMatMul, type BackendName } from '../src';
import { relativeError } from './fixture.helpers';

function random(shape: number[], seed: number): tf.Tensor {
  return tf.randomNormal(shape, 0, 1, 'float32', seed);
}

describe.each(['wasm', 'cpu'] as BackendName[])('matmul ops on %s', (backend) => {
  beforeAll(async () => {
    await initBackend(backend);
  });

  it('frozenMatMul: same value and input gradient as tf.matMul, no weight gradient needed', () => {
    tf.tidy(() => {
      const x = random([6, 5], 1) as tf.Tensor2D;
      const w = random([5, 7], 2) as tf.Tensor2D;
      const dy = random([6, 7], 3);
      const ours = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(frozenMatMul(a as tf.Tensor2D, w), dy)))(
        x,
      );
      const ref = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.matMul(a as tf.Tensor2D, w), dy)))(x);
      expect(relativeError(frozenMatMul(x, w).dataSync(), tf.matMul(x, w).dataSync())).toBeLessThan(
        1e-6,
      );
      expect(relativeError(ours.dataSync(), ref.dataSync())).toBeLessThan(1e-6);
    });
  });

  it('frozenMatMul on a trainable Variable (full fine-tuning) still trains the weight', () => {
    const w = tf.variable(random([5, 7], 4), true);
    tf.tidy(() => {
      const x = random([6, 5], 5) as tf.Tensor2D;
      const ours = tf.variableGrads(
        () => tf.sum(tf.square(frozenMatMul(x, w as unknown as tf.Tensor2D))),
        [w],
      );
      const ref = tf.variableGrads(() => tf.sum(tf.square(tf.matMul(x, w))), [w]);
      expect(
        relativeError(ours.grads[w.name].dataSync(), ref.grads[w.name].dataSync()),
      ).toBeLessThan(1e-6);
    });
    w.dispose();
  });

  it('matMul2d and tiedHeadMatMul: values and both gradients match', () => {
    tf.tidy(() => {
      const a = random([4, 3], 6);
      const b = random([3, 8], 7);
      const e = random([8, 3], 8); // [V, C]
      const dy = random([4, 8], 9);
      const [ga, gb] = tf.grads((x: tf.Tensor, y: tf.Tensor) =>
        tf.sum(tf.mul(matMul2d(x as tf.Tensor2D, y as tf.Tensor2D), dy)),
      )([a, b]);
      const [ra, rb] = tf.grads((x: tf.Tensor, y: tf.Tensor) =>
        tf.sum(tf.mul(tf.matMul(x, y), dy)),
      )([a, b]);
      expect(relativeError(ga.dataSync(), ra.dataSync())).toBeLessThan(1e-6);
      expect(relativeError(gb.dataSync(), rb.dataSync())).toBeLessThan(1e-6);
      const head = tiedHeadMatMul(a as tf.Tensor2D, e as tf.Tensor2D);
      expect(relativeError(head.dataSync(), tf.matMul(a, e, false, true).dataSync())).toBeLessThan(
        1e-6,
      );
      const gh = tf.grad((x: tf.Tensor) =>
        tf.sum(tf.mul(tiedHeadMatMul(x as tf.Tensor2D, e as tf.Tensor2D), dy)),
      )(a);
      const rh = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(tf.matMul(x, e, false, true), dy)))(a);
      expect(relativeError(gh.dataSync(), rh.dataSync())).toBeLessThan(1e-6);
    });
  });
});
