import * as tf from '@tensorflow/tfjs';

/**
 * Next-token cross-entropy, as transformers' `ForCausalLMLoss`: position t predicts token
 * t+1, and the loss is the mean over target positions whose `lossMask` is non-zero (the
 * role of labels = -100 in transformers). `lossMask` [B, T] is indexed by *target*
 * position, so prompt tokens are masked by zeroing their entries.
 *
 * The target log-probability is picked with a one-hot product rather than `gather`, whose
 * gradient needs UnsortedSegmentSum, a kernel the wasm backend lacks (DESIGN §7).
 */
export function causalLmLoss(
  logits: tf.Tensor3D, // [B, T, V]
  inputIds: tf.Tensor2D, // [B, T] int32
  lossMask?: tf.Tensor2D, // [B, T], 1 = predict this token
): tf.Scalar {
  return tf.tidy(() => {
    const [batch, length, vocab] = logits.shape;
    const predictions = tf.slice(logits, [0, 0, 0], [batch, length - 1, vocab]); // [B, T-1, V]
    const targets = tf.slice(tf.cast(inputIds, 'int32'), [0, 1], [batch, length - 1]); // [B, T-1]
    const logProbs = tf.logSoftmax(predictions, -1); // [B, T-1, V]
    const picked = tf.sum(tf.mul(logProbs, tf.oneHot(targets, vocab)), -1); // [B, T-1]
    const weights = lossMask
      ? tf.slice(tf.cast(lossMask, 'float32'), [0, 1], [batch, length - 1]) // [B, T-1]
      : tf.onesLike(picked); // [B, T-1]
    const total = tf.sum(tf.mul(tf.neg(picked), weights)); // []
    return tf.div<tf.Scalar>(total, tf.maximum(tf.sum(weights), 1e-12)); // []
  });
}
