/**
 * Matrix products that keep the wasm backend on XNNPACK's fast path (DESIGN §7).
 *
 * tfjs-backend-wasm 4.22 sends a 2-D matMul without transposes to XNNPACK and everything
 * else (transposeA, transposeB, any batch dimension) to a naive loop. Measured on the
 * reference training step (docs/trainer.md): 7–13 GFLOP/s against 0.6–0.8 GFLOP/s. Autodiff
 * of y = x·W produces dy·Wᵀ and xᵀ·dy, exactly the slow forms, and attention is batched.
 *
 * On wasm these helpers therefore transpose explicitly (a Transpose kernel is a memory copy,
 * about 1% of the product it feeds) and multiply plainly, with hand-written gradients that
 * do the same; batched products run as one 2-D product per batch entry. On other backends
 * (cpu, tfjs-node) transposes are free inside MatMul, so the helpers are plain `tf.matMul`.
 * The maths is unchanged; only float32 summation order can differ (parity tests hold).
 */
import * as tf from '@tensorflow/tfjs';

import { blasKernelsActive } from './blas.kernels';

/**
 * Whether to route products around the wasm backend's slow MatMul path. Not with the
 * OpenBLAS kernels (`wasm-blas`), which take every transpose form natively.
 * `LORAFLEET_WASM_FAST_MATMUL=0` turns it off (the benchmark's "before" figure).
 */
export function avoidTransposedMatMul(): boolean {
  return (
    tf.getBackend() === 'wasm' &&
    !blasKernelsActive('wasm') &&
    process.env.LORAFLEET_WASM_FAST_MATMUL !== '0'
  );
}

function isTrainable(t: tf.Tensor): boolean {
  return t instanceof tf.Variable && t.trainable;
}

/** [a, b] → [b, a] (rank 2) or [n, a, b] → [n, b, a] (rank 3). */
function swapLastTwo<T extends tf.Tensor>(x: T): T {
  return tf.transpose(x, x.rank === 2 ? [1, 0] : [0, 2, 1]);
}

/** a [N, K] · b [K, M], plain on every backend, with plain products in the gradient too. */
const plainProduct = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const [a, b] = args as [tf.Tensor2D, tf.Tensor2D];
  (args[2] as tf.GradSaveFunc)([a, b]);
  return {
    value: tf.matMul(a, b), // [N, M]
    // tidy frees the transposed copies as soon as the products exist.
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
      tf.tidy(() => {
        const [sa, sb] = saved as [tf.Tensor2D, tf.Tensor2D];
        return [
          tf.matMul(dy, swapLastTwo(sb)), // [N, K] = dy · bᵀ
          tf.matMul(swapLastTwo(sa), dy), // [K, M] = aᵀ · dy
        ];
      }),
  };
});

/** a [N, K] · b [K, M] where both may need gradients (LoRA A and B, full fine-tuning). */
export function matMul2d(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  if (!avoidTransposedMatMul()) return tf.matMul(a, b);
  return plainProduct(a, b) as tf.Tensor2D;
}

/**
 * x [N, K] · w [K, M] for a frozen weight (a base weight in LoRA mode): only x gets a
 * gradient, dy · wᵀ, which would otherwise be the slowest product of a LoRA step on wasm.
 */
export function frozenMatMul(x: tf.Tensor2D, w: tf.Tensor2D): tf.Tensor2D {
  if (!avoidTransposedMatMul()) return tf.matMul(x, w);
  if (isTrainable(w)) return matMul2d(x, w);
  // w is a long-lived model weight, so the closure may hold it until the backward pass.
  const product = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => ({
    value: tf.matMul(args[0] as tf.Tensor2D, w), // [N, M]
    gradFunc: (dy: tf.Tensor) => tf.tidy(() => tf.matMul(dy as tf.Tensor2D, swapLastTwo(w))), // [N, K]
  }));
  return product(x) as tf.Tensor2D;
}

/**
 * x [N, C] · eᵀ for e [V, C]: a tied output head (GPT-2's `wte`, Llama's `embed_tokens`).
 * The gradient to x is dy · e, already plain.
 */
export function tiedHeadMatMul(x: tf.Tensor2D, e: tf.Tensor2D): tf.Tensor2D {
  if (!avoidTransposedMatMul()) return tf.matMul(x, e, false, true);
  if (isTrainable(e)) return matMul2d(x, swapLastTwo(e)); // gradient reaches e through the transpose
  const product = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => ({
    value: tf.tidy(() => tf.matMul(args[0] as tf.Tensor2D, swapLastTwo(e))), // [N, V]
    gradFunc: (dy: tf.Tensor) => tf.matMul(dy, e), // [N, C]
  }));
  return product(x) as tf.Tensor2D;
}

/**
 * Batched product over equal leading dimensions, e.g. attention's [B, H, T, D] ·
 * [B, H, D, T]; `transposeB` transposes b's last two axes (q·kᵀ).
 *
 * The wasm backend runs every batched product on its slow path, with or without transposes.
 * Splitting the batch into 2-D products would reach XNNPACK, but slicing a tensor on wasm
 * copies the whole input each time (`readSync`), which costs more than it saves (measured:
 * unstacking [32, 128, 128] 130 ms, the slow batched product itself 150 ms). So this stays
 * `tf.matMul`; it exists so attention has one place to change when tfjs allows better.
 */
export function batchedMatMul<T extends tf.Tensor>(a: T, b: tf.Tensor, transposeB = false): T {
  return tf.matMul(a, b, false, transposeB) as unknown as T;
}
