/**
 * Global-norm gradient clipping with `torch.nn.utils.clip_grad_norm_`'s rule: the norm is
 * taken over all gradients together, and every gradient is scaled by
 * min(1, max_norm / (norm + 1e-6)).
 */
import * as tf from '@tensorflow/tfjs';

/** Σ over all gradients of Σ g², as a scalar tensor (read it together with other values). */
export function squaredGlobalNorm(grads: Map<string, tf.Tensor>): tf.Scalar {
  return tf.tidy(() => tf.addN([...grads.values()].map((g) => tf.sum<tf.Scalar>(tf.square(g))))); // []
}

/**
 * Scales the gradients in place (map entries are replaced and the old tensors disposed)
 * when `norm` exceeds `maxNorm`. Returns the coefficient applied (1 when none). `maxNorm`
 * 0 disables clipping.
 */
export function clipByGlobalNorm(
  grads: Map<string, tf.Tensor>,
  maxNorm: number,
  norm: number,
): number {
  if (!(maxNorm > 0)) return 1;
  const coefficient = maxNorm / (norm + 1e-6);
  // torch multiplies by the clamped coefficient even when it is 1; skipping is identical.
  if (coefficient >= 1) return 1;
  for (const [name, g] of grads) {
    grads.set(name, tf.mul(g, coefficient)); // [param shape]
    g.dispose();
  }
  return coefficient;
}
