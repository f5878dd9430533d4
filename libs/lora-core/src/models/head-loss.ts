/**
 * The LM head fused with the completion-only token loss (issue 13): Σ w·NLL and Σ w·[argmax =
 * target] from the final hidden states, without the [N, V] logits ever existing whole. With
 * vocabularies of 50k–152k and a few thousand tokens a step, whole logits (and the softmax
 * and gradient autodiff keeps beside them) were the largest activation of a step.
 *
 * - Host head (a `*-blas` backend, weight in host memory): one kernel over vocabulary blocks
 *   (backend/host-weight.kernels.ts), scoring only rows with a non-zero weight.
 * - Frozen tensor head (webgpu, tfjs-node, plain wasm/cpu): a custom op over row chunks that
 *   recomputes each chunk's logits in backward. On webgpu a chunk's softmax cross-entropy is
 *   one WGSL kernel each way (backend/webgpu-cross-entropy.kernels.ts) and chunks stay within
 *   the device's binding limit.
 * - A head that trains (an adapter on `lm_head`, or full fine-tuning): logits, then the
 *   token loss (trainer/token-loss.ts), as before.
 * All three equal `weightedTokenNllSum`/`weightedCorrectCount` on whole logits;
 * test/head-loss.spec.ts checks values and gradients.
 */
import * as tf from '@tensorflow/tfjs';

import { HostMatrix, hostHeadLoss } from '../backend/host-weight.kernels';
import { deviceBindingLimitBytes } from '../backend/webgpu.backend';
import {
  crossEntropyGrad,
  crossEntropyRows,
  fusedCrossEntropyActive,
} from '../backend/webgpu-cross-entropy.kernels';
import {
  weightedCorrectCount,
  weightedTokenNllSum,
  type ShiftedTargets,
} from '../trainer/token-loss';

/**
 * Logits computed at once on the tensor path: [rows, V] ≤ this many floats (16 MiB), and no
 * more than the device binds in one buffer (webgpu; a chunk is one tensor).
 */
const CHUNK_FLOATS = 4 * 1024 * 1024;

export type LmHead =
  /** Frozen, in host memory, stored [V, C] (logits = h·Wᵀ). */
  | { kind: 'host'; matrix: HostMatrix }
  /** Frozen tensor: logits of a row chunk, and the chunk's logit gradient back to hidden. */
  | {
      kind: 'frozen';
      vocabSize: number;
      logits: (x: tf.Tensor2D) => tf.Tensor2D; // [n, C] → [n, V]
      backToHidden: (g: tf.Tensor2D) => tf.Tensor2D; // [n, V] → [n, C]
    }
  /** Trainable: logits through autodiff. */
  | { kind: 'trainable'; logits: (x: tf.Tensor2D) => tf.Tensor2D };

export interface HeadLoss {
  /** Σ_i w_i · NLL_i, differentiable in the hidden states. */
  nll: tf.Scalar;
  /** Σ_i w_i · [argmax_i = target_i]. */
  correct: tf.Scalar;
}

/** hidden [N, C] (N = B·T, flattened like the logits) → the weighted loss sums. */
export function headLoss(
  hidden: tf.Tensor2D,
  head: LmHead,
  shifted: ShiftedTargets,
  training: boolean,
): HeadLoss {
  switch (head.kind) {
    case 'host': {
      const targets = tf.tensor1d(shifted.targets, 'int32'); // [N]
      const weights = tf.tensor1d(shifted.weights, 'float32'); // [N]
      return hostHeadLoss(hidden, head.matrix, targets, weights, training);
    }
    case 'frozen':
      return chunkedHeadLoss(hidden, head, shifted);
    case 'trainable': {
      const logits = head.logits(hidden); // [N, V]
      return {
        nll: weightedTokenNllSum(logits, shifted),
        correct: weightedCorrectCount(logits, shifted),
      };
    }
  }
}

/** Rows [start, start + size) of the flattened hidden states. */
interface Chunk {
  start: number;
  size: number;
}

function chunkedHeadLoss(
  hidden: tf.Tensor2D,
  head: Extract<LmHead, { kind: 'frozen' }>,
  shifted: ShiftedTargets,
): HeadLoss {
  const [n, width] = hidden.shape;
  const vocab = head.vocabSize;
  const limit = deviceBindingLimitBytes();
  const chunkFloats = limit === null ? CHUNK_FLOATS : Math.min(CHUNK_FLOATS, Math.floor(limit / 4));
  const rowsPerChunk = Math.max(1, Math.floor(chunkFloats / vocab));
  const chunks: Chunk[] = [];
  for (let start = 0; start < n; start += rowsPerChunk)
    chunks.push({ start, size: Math.min(rowsPerChunk, n - start) });
  const targetsOf = (c: Chunk) => shifted.targets.subarray(c.start, c.start + c.size);
  const weightsOf = (c: Chunk) => shifted.weights.subarray(c.start, c.start + c.size);
  const fused = fusedCrossEntropyActive();
  /** One chunk's [Σ w·NLL, Σ w·[argmax = target]], [2]. */
  const chunkSums = (logits: tf.Tensor2D, chunk: Chunk): tf.Tensor1D => {
    const w = tf.tensor1d(weightsOf(chunk)); // [n_c]
    const targets = tf.tensor1d(targetsOf(chunk), 'int32'); // [n_c]
    if (fused) {
      // One WGSL dispatch for the row statistics (backend/webgpu-cross-entropy.kernels.ts).
      const rows = crossEntropyRows(logits, targets); // [n_c, 2]: NLL, hit
      return tf.sum(tf.mul(rows, tf.reshape(w, [chunk.size, 1])), 0); // [2]
    }
    const lse = tf.logSumExp(logits, 1); // [n_c]
    const flat = Int32Array.from(targetsOf(chunk), (t, r) => r * vocab + t);
    const picked = tf.gather(tf.reshape(logits, [chunk.size * vocab]), tf.tensor1d(flat, 'int32')); // [n_c]
    const hit = tf.cast(tf.equal(tf.argMax(logits, 1), targets), 'float32'); // [n_c]
    return tf.stack([tf.sum(tf.mul(tf.sub(lse, picked), w)), tf.sum(tf.mul(hit, w))]) as tf.Tensor1D; // [2]
  };
  /** One chunk's logit gradient of dy·Σ w·NLL: (softmax − onehot)·w·dy, [n_c, V]. */
  const chunkLogitGrad = (logits: tf.Tensor2D, chunk: Chunk, dy: tf.Tensor): tf.Tensor2D => {
    const targets = tf.tensor1d(targetsOf(chunk), 'int32'); // [n_c]
    const scale = tf.mul<tf.Tensor1D>(tf.tensor1d(weightsOf(chunk)), dy); // [n_c]
    if (fused) return crossEntropyGrad(logits, targets, scale); // [n_c, V]
    const probs = tf.softmax(logits, 1); // [n_c, V]
    const onehot = tf.oneHot(targets, vocab); // [n_c, V]
    return tf.mul<tf.Tensor2D>(tf.sub(probs, onehot), tf.reshape(scale, [chunk.size, 1])); // [n_c, V]
  };
  let correct: tf.Scalar | null = null;
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const h = args[0] as tf.Tensor2D; // [N, C]
    (args[1] as tf.GradSaveFunc)([h]);
    let totals: tf.Tensor1D = tf.zeros([2]); // [2]: Σ w·NLL, Σ w·hit
    for (const chunk of chunks) {
      const next = tf.tidy(() => {
        const logits = head.logits(tf.slice(h, [chunk.start, 0], [chunk.size, width])); // [n_c, V]
        return tf.add<tf.Tensor1D>(totals, chunkSums(logits, chunk)); // [2]
      });
      totals.dispose();
      totals = next;
    }
    const [nll, hits] = tf.unstack(totals) as [tf.Scalar, tf.Scalar]; // [], []
    totals.dispose();
    // Not the op's value: kept past its scope and handed out below.
    correct = tf.keep(hits);
    return {
      value: nll,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) =>
        tf.tidy(() => {
          const hs = saved[0] as tf.Tensor2D;
          const parts = chunks.map((chunk) =>
            tf.tidy(() => {
              const logits = head.logits(tf.slice(hs, [chunk.start, 0], [chunk.size, width])); // [n_c, V]
              return head.backToHidden(chunkLogitGrad(logits, chunk, dy as tf.Tensor)); // [n_c, C]
            }),
          );
          const dh = tf.concat(parts, 0); // [N, C]
          for (const p of parts) p.dispose();
          return [dh];
        }),
    };
  });
  const nll = op(hidden);
  // A tracked copy in the caller's scope, so tidy and variableGrads dispose it as usual.
  const kept = correct as unknown as tf.Scalar;
  const tracked = tf.clone(kept);
  kept.dispose();
  return { nll, correct: tracked };
}
