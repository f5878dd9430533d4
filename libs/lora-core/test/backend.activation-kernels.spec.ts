/**
 * The fused GELU-tanh and SiLU kernels (backend/activation.kernels.ts) against the composite
 * tfjs formulas they replace and a float64 reference: values and gradients, on cpu and wasm
 * (wasm-blas runs the same wasm kernels; OpenBLAS only replaces the matmuls), without leaking
 * tensors.
 */
import * as tf from '@tensorflow/tfjs';

import { initBackend } from '../src';
import { GELU_TANH_KERNEL, SILU_KERNEL } from '../src/backend/activation.kernels';
import { geluTanh, geluTanhComposite, silu, siluComposite } from '../src/models/nn.ops';

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

interface Case {
  name: string;
  fused: (x: tf.Tensor) => tf.Tensor;
  composite: (x: tf.Tensor) => tf.Tensor;
  kernel: string;
  /** float64 value and derivative. */
  exact: (x: number) => [number, number];
}

const CASES: Case[] = [
  {
    name: 'GELU (tanh)',
    fused: geluTanh,
    composite: geluTanhComposite,
    kernel: GELU_TANH_KERNEL,
    exact: (x) => {
      const t = Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3));
      const dInner = SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x);
      return [0.5 * x * (1 + t), 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * dInner];
    },
  },
  {
    name: 'SiLU',
    fused: silu,
    composite: siluComposite,
    kernel: SILU_KERNEL,
    exact: (x) => {
      const s = 1 / (1 + Math.exp(-x));
      return [x * s, s * (1 + x * (1 - s))];
    },
  },
];

/** [4, 6, 50]: a dense sweep of [-9, 9] (both branches of the GELU tanh) and extremes. */
function inputs(): number[] {
  const values = Array.from({ length: 1180 }, (_, i) => -9 + (18 * i) / 1179);
  values.push(0, -0, 1e-6, -1e-6, 1e-3, -1e-3, 20, -20, 60, -60, 100, -100, 1e4, -1e4);
  while (values.length < 4 * 6 * 50) values.push(Math.sin(values.length) * 5);
  return values;
}

/** Upstream gradient: varied so a wrong element cannot cancel out. */
function upstream(n: number): number[] {
  return Array.from({ length: n }, (_, i) => 0.5 + Math.cos(i * 0.37));
}

/** Value and gradient of sum(f(x)·dy) on the active backend, as plain arrays. */
function valueAndGrad(f: (x: tf.Tensor) => tf.Tensor): { y: number[]; dx: number[] } {
  return tf.tidy(() => {
    const values = inputs();
    const x = tf.tensor3d(values, [4, 6, 50]); // [4, 6, 50]
    const dy = tf.tensor3d(upstream(values.length), [4, 6, 50]); // [4, 6, 50]
    const y = f(x); // [4, 6, 50]
    const dx = tf.grad((input: tf.Tensor) => tf.sum(tf.mul(f(input), dy)))(x); // [4, 6, 50]
    return { y: Array.from(y.dataSync()), dx: Array.from(dx.dataSync()) };
  });
}

/** Largest |a − b| / (1 + |b|): absolute near zero, relative for large values. */
function maxError(a: number[], b: number[]): number {
  return a.reduce((worst, v, i) => Math.max(worst, Math.abs(v - b[i]) / (1 + Math.abs(b[i]))), 0);
}

describe.each(['cpu', 'wasm'] as const)('fused activations on %s', (backend) => {
  beforeAll(async () => {
    await initBackend(backend);
  });

  describe.each(CASES)('$name', ({ fused, composite, kernel, exact }) => {
    it('runs the fused kernel, and the backward pass is one multiply', async () => {
      const x = tf.tensor1d([-2, -0.5, 0, 0.5, 2]); // [5]
      const dy = tf.onesLike(x); // [5]
      const profile = await tf.profile(() => {
        tf.tidy(() => tf.grad(fused)(x, dy)); // [5]
      });
      tf.dispose([x, dy]);
      // Real kernels only: the custom-gradient wrapper is listed too.
      const names = profile.kernels
        .map((k) => k.name)
        .filter((name) => tf.getKernel(name, tf.getBackend()));
      // Forward: the kernel and the copy of the kept derivative; backward: dy · dy/dx.
      expect(names).toEqual([kernel, 'Identity', 'Multiply']);
    });

    it('values and gradients match the composite ops and float64', () => {
      const mine = valueAndGrad(fused);
      const ops = valueAndGrad(composite);
      const dy = upstream(mine.y.length);
      const reference = inputs().map((x) => exact(Math.fround(x)));
      // float32 rounding of the result (≈6e-8 relative) plus the composite's own roundings.
      expect(maxError(mine.y, ops.y)).toBeLessThan(1e-6);
      expect(maxError(mine.dx, ops.dx)).toBeLessThan(1e-5);
      expect(
        maxError(
          mine.y,
          reference.map(([y]) => y),
        ),
      ).toBeLessThan(1e-7);
      expect(
        maxError(
          mine.dx,
          reference.map(([, d], i) => d * Math.fround(dy[i])),
        ),
      ).toBeLessThan(1e-6);
    });

    it('is exact at the saturated ends and propagates NaN', () => {
      const y = tf.tidy(() => Array.from(fused(tf.tensor1d([-1e4, 1e4, NaN])).dataSync()));
      expect(y[0]).toBeCloseTo(0, 12);
      expect(y[1]).toBe(1e4);
      expect(y[2]).toBeNaN();
    });

    it('leaks no tensors', () => {
      valueAndGrad(fused); // warm-up: backend-internal allocations are not leaks
      const before = tf.memory().numTensors;
      valueAndGrad(fused);
      expect(tf.memory().numTensors).toBe(before);
      // Outside any tidy and with no tape (inference), the unused derivative is freed too.
      const x = tf.tensor1d([-1, 0, 1]); // [3]
      fused(x).dispose();
      x.dispose();
      expect(tf.memory().numTensors).toBe(before);
    });
  });
});
