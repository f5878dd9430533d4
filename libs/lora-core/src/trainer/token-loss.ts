/**
 * Completion-only next-token loss in the form the trainer needs: a *sum* of per-token
 * negative log-likelihoods (so gradient accumulation can divide by the token count of the
 * whole accumulation group and equal the big batch exactly), plus the number of correctly
 * predicted target tokens (mean token accuracy).
 *
 * Targets are shifted on the host: for an input row `ids`, position t is scored against
 * `ids[t + 1]` with weight `lossMask[t + 1]` (libs/data's convention: `lossMask[t] = 1` marks
 * token t as a target predicted from t − 1). The last position has weight 0. Scoring all T
 * positions avoids slicing the [B, T, V] logits, the largest activation of a step.
 *
 * The gradient is written by hand (`tf.customGrad`): d/dlogits = w · (softmax − onehot). This
 * replaces the autodiff chain through logSoftmax and a one-hot product (four [N, V] passes
 * forward, more backward) and never needs `gather`'s gradient (UnsortedSegmentSum), which the
 * wasm backend lacks. It equals `causalLmLoss` × token count; `trainer.loss.spec.ts` checks
 * value and gradient against it.
 */
import * as tf from '@tensorflow/tfjs';

/** Host-side targets for one micro-batch, aligned with the flattened logits [B·T, V]. */
export interface ShiftedTargets {
  /** [B·T] the token each position predicts (0 where the weight is 0). */
  targets: Int32Array;
  /** [B·T] 1 where that prediction is scored, else 0. */
  weights: Float32Array;
  /** [B·T] row-major index of each position's target logit: i·V + target. */
  flatIndex: Int32Array;
  /** Scored tokens (sum of weights). */
  count: number;
}

export function shiftTargets(
  inputIds: readonly (readonly number[])[],
  lossMask: readonly (readonly number[])[],
  vocabSize: number,
): ShiftedTargets {
  const rows = inputIds.length;
  const length = rows > 0 ? inputIds[0].length : 0;
  const n = rows * length;
  const targets = new Int32Array(n);
  const weights = new Float32Array(n);
  const flatIndex = new Int32Array(n);
  let count = 0;
  for (let b = 0; b < rows; b++) {
    const ids = inputIds[b];
    const mask = lossMask[b];
    for (let t = 0; t < length; t++) {
      const i = b * length + t;
      if (t + 1 < length && mask[t + 1] !== 0) {
        const target = ids[t + 1];
        if (!Number.isInteger(target) || target < 0 || target >= vocabSize) {
          throw new RangeError(
            `target token id ${target} is outside the vocabulary (0..${vocabSize - 1})`,
          );
        }
        targets[i] = target;
        weights[i] = 1;
        count += 1;
      }
      flatIndex[i] = i * vocabSize + targets[i];
    }
  }
  return { targets, weights, flatIndex, count };
}

/**
 * Σ_i w_i · (logsumexp(logits_i) − logits_i[target_i]) over logits [N, V]; differentiable in
 * `logits` only. Returns a scalar.
 */
export function weightedTokenNllSum(
  logits: tf.Tensor2D, // [N, V]
  shifted: ShiftedTargets,
): tf.Scalar {
  const [n, vocab] = logits.shape;
  const targets = tf.tensor1d(shifted.targets, 'int32'); // [N]
  const weights = tf.tensor1d(shifted.weights, 'float32'); // [N]
  const flatIndex = tf.tensor1d(shifted.flatIndex, 'int32'); // [N]
  // Everything the backward pass reads goes through save(): tfjs keeps saved tensors alive
  // until backprop, whereas tensors merely captured by the closure die with the forward scope.
  const nll = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const logitsIn = args[0] as tf.Tensor2D; // [N, V]
    const save = args[1] as tf.GradSaveFunc;
    const lse = tf.logSumExp(logitsIn, 1); // [N]
    const picked = tf.gather(tf.reshape(logitsIn, [n * vocab]), flatIndex); // [N]
    const value = tf.sum(tf.mul(tf.sub(lse, picked), weights)); // []
    save([logitsIn, lse, targets, weights]);
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        tf.tidy(() => {
          const [savedLogits, savedLse, savedTargets, savedWeights] = saved;
          const probs = tf.exp(tf.sub(savedLogits, tf.expandDims(savedLse, 1))); // [N, V]
          const diff = tf.sub(probs, tf.oneHot(savedTargets as tf.Tensor1D, vocab)); // [N, V]
          return tf.mul(diff, tf.mul(tf.expandDims(savedWeights, 1), dy)); // [N, V]
        }),
    };
  });
  const result = nll(logits) as tf.Scalar; // []
  targets.dispose();
  weights.dispose();
  flatIndex.dispose();
  return result;
}

/** Σ_i w_i · [argmax(logits_i) = target_i]: correctly predicted target tokens. */
export function weightedCorrectCount(
  logits: tf.Tensor2D, // [N, V]
  shifted: ShiftedTargets,
): tf.Scalar {
  return tf.tidy(() => {
    const predicted = tf.argMax(logits, 1); // [N] int32
    const hit = tf.cast(tf.equal(predicted, tf.tensor1d(shifted.targets, 'int32')), 'float32'); // [N]
    return tf.sum(tf.mul(hit, tf.tensor1d(shifted.weights, 'float32'))); // []
  });
}
