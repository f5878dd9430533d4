/**
 * Tensor building blocks shared by the architectures. Each mirrors the transformers
 * implementation it names, in float32; callers run them inside `tf.tidy`.
 */
import * as tf from '@tensorflow/tfjs';

import { GELU_TANH_KERNEL, SILU_KERNEL, hasFusedActivation } from '../backend/activation.kernels';
import { batchedMatMul } from '../backend/matmul.ops';
import type { Gpt2Activation } from './model.config';

/**
 * torch.nn.LayerNorm over the last axis (biased variance, as torch computes it), with a
 * hand-written gradient that keeps only x: autodiff of the composite kept about six tensors
 * of x's size per norm for backward (issue 13's memory budget).
 */
export function layerNorm(
  x: tf.Tensor3D,
  gamma: tf.Tensor,
  beta: tf.Tensor,
  eps: number,
): tf.Tensor3D {
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xIn, g, b] = args as [tf.Tensor3D, tf.Tensor, tf.Tensor];
    (args[3] as tf.GradSaveFunc)([xIn, g]);
    return {
      value: tf.add(tf.mul(normalise(xIn, eps), g), b), // [B, T, C]
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) =>
        tf.tidy(() => {
          const [xs, gs] = saved as [tf.Tensor3D, tf.Tensor];
          const up = dy as tf.Tensor3D; // [B, T, C]
          const mean = tf.mean(xs, -1, true); // [B, T, 1]
          const centered = tf.sub(xs, mean); // [B, T, C]
          const rstd = tf.rsqrt(tf.add(tf.mean(tf.square(centered), -1, true), eps)); // [B, T, 1]
          const xhat = tf.mul(centered, rstd); // [B, T, C]
          const dxhat = tf.mul(up, gs); // [B, T, C]
          // dx = rstd·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂))
          const dx = tf.mul(
            tf.sub(
              tf.sub(dxhat, tf.mean(dxhat, -1, true)),
              tf.mul(xhat, tf.mean(tf.mul(dxhat, xhat), -1, true)),
            ),
            rstd,
          ); // [B, T, C]
          // Frozen norms (LoRA) skip their reductions over every token, which cost more than
          // the whole rest of the norm's backward on wasm.
          const dGamma = trainable(gamma)
            ? tf.reshape(tf.sum(tf.mul(up, xhat), [0, 1]), gs.shape)
            : tf.zerosLike(gs); // [C]
          const dBeta = trainable(beta)
            ? tf.reshape(tf.sum(up, [0, 1]), gs.shape)
            : tf.zerosLike(gs); // [C]
          return [dx, dGamma, dBeta];
        }),
    };
  });
  return op(x, gamma, beta) as tf.Tensor3D;
}

/** Whether autodiff wants a gradient for `t` (a trainable Variable, i.e. full fine-tuning). */
function trainable(t: tf.Tensor): boolean {
  return t instanceof tf.Variable && t.trainable;
}

/** (x − mean) / √(var + eps) over the last axis. */
function normalise(x: tf.Tensor3D, eps: number): tf.Tensor3D {
  const mean = tf.mean(x, -1, true); // [B, T, 1]
  const centered = tf.sub(x, mean); // [B, T, C]
  const variance = tf.mean(tf.square(centered), -1, true); // [B, T, 1]
  return tf.mul(centered, tf.rsqrt(tf.add(variance, eps))); // [B, T, C]
}

/**
 * LlamaRMSNorm (Zhang & Sennrich 2019): x / √(mean(x²) + eps) · w, no centring, no bias;
 * with `offset` 1, Gemma's RMSNorm, which scales by (1 + w).
 * The hand-written gradient keeps only x: dx = r·(g − x̂·mean(g·x̂)), g = dy·(offset + w),
 * x̂ = x·r; dw = Σ dy·x̂ either way.
 */
export function rmsNorm(
  x: tf.Tensor3D,
  weight: tf.Tensor,
  eps: number,
  offset: 0 | 1 = 0,
): tf.Tensor3D {
  const scaleOf = (w: tf.Tensor) => (offset === 0 ? w : tf.add(w, offset)); // [C]
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xIn, w] = args as [tf.Tensor3D, tf.Tensor];
    (args[2] as tf.GradSaveFunc)([xIn, w]);
    const meanSquare = tf.mean(tf.square(xIn), -1, true); // [B, T, 1]
    return {
      value: tf.mul(tf.mul(xIn, tf.rsqrt(tf.add(meanSquare, eps))), scaleOf(w)), // [B, T, C]
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) =>
        tf.tidy(() => {
          const [xs, ws] = saved as [tf.Tensor3D, tf.Tensor];
          const up = dy as tf.Tensor3D; // [B, T, C]
          const r = tf.rsqrt(tf.add(tf.mean(tf.square(xs), -1, true), eps)); // [B, T, 1]
          const xhat = tf.mul(xs, r); // [B, T, C]
          const g = tf.mul(up, scaleOf(ws)); // [B, T, C]
          const dx = tf.mul(tf.sub(g, tf.mul(xhat, tf.mean(tf.mul(g, xhat), -1, true))), r); // [B, T, C]
          const dw = trainable(weight)
            ? tf.reshape(tf.sum(tf.mul(up, xhat), [0, 1]), ws.shape)
            : tf.zerosLike(ws); // [C]
          return [dx, dw];
        }),
    };
  });
  return op(x, weight) as tf.Tensor3D;
}

/**
 * a + b of one shape (a residual connection, an adapter's branch). The gradient is dy for
 * both, so unlike tfjs's Add (which saves both inputs to reduce broadcast gradients) this
 * keeps nothing alive for backward.
 */
export function addSameShape<T extends tf.Tensor>(a: T, b: T): T {
  if (!tf.util.arraysEqual(a.shape, b.shape)) return tf.add(a, b);
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => ({
    value: tf.add(args[0] as tf.Tensor, args[1] as tf.Tensor),
    gradFunc: (dy: tf.Tensor | tf.Tensor[]) => [dy as tf.Tensor, tf.clone(dy as tf.Tensor)],
  }));
  return op(a, b) as T;
}

/** y [N, out] + bias [out], keeping nothing for backward: dy, and Σ_rows dy for the bias. */
export function addBias(y: tf.Tensor2D, bias: tf.Tensor1D): tf.Tensor2D {
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => ({
    value: tf.add(args[0] as tf.Tensor2D, args[1] as tf.Tensor1D), // [N, out]
    gradFunc: (dy: tf.Tensor | tf.Tensor[]) => [
      dy as tf.Tensor,
      trainable(bias) ? tf.sum(dy as tf.Tensor, 0) : tf.zerosLike(bias),
    ], // [N, out], [out]
  }));
  return op(y, bias) as tf.Tensor2D;
}

/**
 * Scaled dot-product attention with an additive mask, grouped-query aware:
 * q [B, KV, G·Tq, D] (the G query heads of each key/value head folded into time),
 * k, v [B, KV, Tk, D], bias broadcastable to [B, 1, Tq, Tk]. Returns [B, KV, G·Tq, D].
 * With `softcap` (Gemma 2's `attn_logit_softcapping`), scores s become cap·tanh(s/cap)
 * before the mask, and their gradient is multiplied by 1 − tanh²(s/cap).
 *
 * The gradient keeps q, k and v only and recomputes the probabilities in backward, as
 * FlashAttention does (Dao et al. 2022): autodiff kept three [B, H, T, T] tensors a layer
 * (raw, scaled and masked scores, and the softmax), the largest activations at seq 256+.
 */
export function attention(
  q: tf.Tensor4D,
  k: tf.Tensor4D,
  v: tf.Tensor4D,
  bias: tf.Tensor4D,
  scale: number,
  groups: number,
  softcap: number | null = null,
): tf.Tensor4D {
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [qIn, kIn, vIn, biasIn] = args as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
    (args[4] as tf.GradSaveFunc)([qIn, kIn, vIn, biasIn]);
    const scores = attentionScores(qIn, kIn, scale, softcap); // [B, KV, G·Tq, Tk]
    return {
      value: batchedMatMul(maskedSoftmax(scores, biasIn, groups), vIn), // [B, KV, G·Tq, D]
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) =>
        tf.tidy(() => {
          const [qs, ks, vs, bs] = saved as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
          const dOut = dy as tf.Tensor4D; // [B, KV, G·Tq, D]
          const capped = attentionScores(qs, ks, scale, softcap); // [B, KV, G·Tq, Tk]
          const probs = maskedSoftmax(capped, bs, groups); // [B, KV, G·Tq, Tk]
          const dProbs = batchedMatMul(dOut, vs, true); // [B, KV, G·Tq, Tk]
          // Softmax backward: ds = p·(dp − Σ_j dp·p)
          const dCapped = tf.mul(probs, tf.sub(dProbs, tf.sum(tf.mul(dProbs, probs), -1, true))); // [B, KV, G·Tq, Tk]
          // d(cap·tanh(s/cap))/ds = 1 − tanh² = 1 − (capped/cap)².
          const dScores =
            softcap === null
              ? dCapped
              : tf.mul(dCapped, tf.sub(1, tf.square(tf.div(capped, softcap)))); // [B, KV, G·Tq, Tk]
          const dq = tf.mul(batchedMatMul(dScores, ks), scale); // [B, KV, G·Tq, D]
          const dk = tf.mul(tf.matMul(dScores, qs, true, false), scale); // [B, KV, Tk, D]
          const dv = tf.matMul(probs, dOut, true, false); // [B, KV, Tk, D]
          return [dq, dk, dv, tf.zerosLike(bs)];
        }),
    };
  });
  return op(q, k, v, bias);
}

/** q·kᵀ·scale, soft-capped to cap·tanh(·/cap) when `softcap` is set → [B, KV, G·Tq, Tk]. */
function attentionScores(
  q: tf.Tensor4D,
  k: tf.Tensor4D,
  scale: number,
  softcap: number | null,
): tf.Tensor4D {
  const scores = tf.mul<tf.Tensor4D>(batchedMatMul(q, k, true), scale); // [B, KV, G·Tq, Tk]
  return softcap === null ? scores : tf.mul(tf.tanh(tf.div(scores, softcap)), softcap);
}

/** softmax(scores + bias) → [B, KV, G·Tq, Tk]. */
function maskedSoftmax(scores: tf.Tensor4D, bias: tf.Tensor4D, groups: number): tf.Tensor4D {
  const [batch, kvHeads, rows, keys] = scores.shape;
  const queries = rows / groups;
  const grouped = tf.reshape(scores, [batch, kvHeads, groups, queries, keys]); // [B, KV, G, Tq, Tk]
  const masked = tf.add(grouped, tf.reshape(bias, [bias.shape[0], 1, 1, queries, keys])); // [B, KV, G, Tq, Tk]
  return tf.reshape(tf.softmax(masked, -1), [batch, kvHeads, rows, keys]); // [B, KV, G·Tq, Tk]
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

/** transformers `ACT2FN` entries used by GPT-2 configs. */
export function activation(x: tf.Tensor, kind: Gpt2Activation): tf.Tensor {
  switch (kind) {
    case 'gelu_new':
    case 'gelu_pytorch_tanh':
    case 'gelu_fast':
      return geluTanh(x);
    case 'gelu':
      return tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1));
    case 'relu':
      return tf.relu(x);
    case 'silu':
      return silu(x);
  }
}

/**
 * Tanh approximation of GELU (Hendrycks & Gimpel 2016), GPT-2's original activation: one fused
 * kernel on wasm and cpu (backend/activation.kernels.ts), tfjs ops elsewhere.
 */
export function geluTanh(x: tf.Tensor): tf.Tensor {
  return hasFusedActivation(GELU_TANH_KERNEL, x) ? fusedGeluTanh(x) : geluTanhComposite(x);
}

/** 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) from tfjs ops (autodiff's gradient). */
export function geluTanhComposite(x: tf.Tensor): tf.Tensor {
  const cube = tf.mul(tf.mul(x, x), x);
  const inner = tf.mul(tf.add(x, tf.mul(cube, 0.044715)), SQRT_2_OVER_PI);
  return tf.mul(tf.mul(x, 0.5), tf.add(tf.tanh(inner), 1));
}

/** x·σ(x) (a.k.a. swish), the gate of Llama's SwiGLU MLP; fused on wasm and cpu like GELU. */
export function silu(x: tf.Tensor): tf.Tensor {
  return hasFusedActivation(SILU_KERNEL, x) ? fusedSilu(x) : siluComposite(x);
}

/**
 * An activation kernel that returns its derivative with its value: the forward pass already
 * has every intermediate, so the backward pass is one multiply by the kept derivative instead
 * of recomputing the activation or running ~15 autodiff kernels. customGrad keeps the tape to
 * one node, and its scope disposes the derivative when nothing records (inference).
 */
function fusedActivation(kernelName: string): (x: tf.Tensor) => tf.Tensor {
  return tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const x = args[0] as tf.Tensor;
    const [y, dydx] = tf.engine().runKernel<tf.Tensor[]>(kernelName, { x }); // each x's shape
    (args[1] as tf.GradSaveFunc)([dydx]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.mul(dy, saved[0]), // x's shape
    };
  });
}

const fusedGeluTanh = fusedActivation(GELU_TANH_KERNEL);
const fusedSilu = fusedActivation(SILU_KERNEL);

/**
 * SwiGLU's product silu(gate)·up (Shazeer 2020), keeping only gate and up for backward:
 * d up = dy·silu(g), d gate = dy·up·σ(g)·(1 + g·(1 − σ(g))). Autodiff of silu then multiply
 * kept three [N, I] tensors (the derivative, the activation and up).
 */
export function swiglu(gate: tf.Tensor2D, up: tf.Tensor2D): tf.Tensor2D {
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [g, u] = args as [tf.Tensor2D, tf.Tensor2D];
    (args[2] as tf.GradSaveFunc)([g, u]);
    return {
      value: tf.mul(silu(g), u), // [N, I]
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) =>
        tf.tidy(() => {
          const [gs, us] = saved as [tf.Tensor2D, tf.Tensor2D];
          const sig = tf.sigmoid(gs); // [N, I]
          const dUp = tf.mul(dy as tf.Tensor2D, tf.mul(gs, sig)); // [N, I]
          const dSilu = tf.mul(sig, tf.add(1, tf.mul(gs, tf.sub(1, sig)))); // [N, I]
          const dGate = tf.mul(tf.mul(dy as tf.Tensor2D, us), dSilu); // [N, I]
          return [dGate, dUp];
        }),
    };
  });
  return op(gate, up) as tf.Tensor2D;
}

/**
 * HF `apply_rotary_pos_emb` (Su et al. 2021): x·cos + rotate_half(x)·sin with
 * rotate_half(x) = [−x₂, x₁]; x [B, H, T, D], cos/sin [T, D] (or [B, 1, T, D] per batch row,
 * for a batch decoded at different positions). The map is linear in x, so the
 * gradient needs no saved activation: dx = dy·cos + rotate_halfᵀ(dy·sin), rotate_halfᵀ(g) = [g₂, −g₁].
 */
export function applyRotary(
  x: tf.Tensor4D,
  cos: tf.Tensor2D | tf.Tensor4D,
  sin: tf.Tensor2D | tf.Tensor4D,
): tf.Tensor4D {
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xIn, c, s] = args as [tf.Tensor4D, tf.Tensor, tf.Tensor];
    (args[3] as tf.GradSaveFunc)([c, s]);
    const half = xIn.shape[3] / 2;
    const x1 = tf.slice(xIn, [0, 0, 0, 0], [-1, -1, -1, half]); // [B, H, T, D/2]
    const x2 = tf.slice(xIn, [0, 0, 0, half], [-1, -1, -1, half]); // [B, H, T, D/2]
    const rotated = tf.concat([tf.neg(x2), x1], 3); // [B, H, T, D]
    return {
      value: tf.add<tf.Tensor4D>(tf.mul(xIn, c), tf.mul(rotated, s)), // [B, H, T, D]
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) =>
        tf.tidy(() => {
          const [cs, ss] = saved;
          const g = tf.mul(dy as tf.Tensor4D, ss); // [B, H, T, D]
          const g1 = tf.slice(g, [0, 0, 0, 0], [-1, -1, -1, half]); // [B, H, T, D/2]
          const g2 = tf.slice(g, [0, 0, 0, half], [-1, -1, -1, half]); // [B, H, T, D/2]
          const dx = tf.add(tf.mul(dy as tf.Tensor4D, cs), tf.concat([g2, tf.neg(g1)], 3)); // [B, H, T, D]
          return [dx, tf.zerosLike(cs), tf.zerosLike(ss)];
        }),
    };
  });
  return op(x, cos, sin);
}

/** x·σ(x) from tfjs ops (autodiff's gradient). */
export function siluComposite(x: tf.Tensor): tf.Tensor {
  return tf.mul(x, tf.sigmoid(x));
}

/** [B, T, H·D] → [B, H, T, D]. */
export function splitHeads(x: tf.Tensor3D, heads: number, headDim: number): tf.Tensor4D {
  const [batch, length] = x.shape;
  const split = tf.reshape<tf.Rank.R4>(x, [batch, length, heads, headDim]); // [B, T, H, D]
  return tf.transpose<tf.Tensor4D>(split, [0, 2, 1, 3]); // [B, H, T, D]
}

/** [B, H, T, D] → [B, T, H·D]. */
export function mergeHeads(x: tf.Tensor4D): tf.Tensor3D {
  const [batch, heads, length, headDim] = x.shape;
  const merged = tf.transpose(x, [0, 2, 1, 3]); // [B, T, H, D]
  return tf.reshape(merged, [batch, length, heads * headDim]); // [B, T, H·D]
}

/** Applies a 2-D layer to every position: [B, T, in] → [B, T, out]. */
export function perPosition(x: tf.Tensor3D, layer: (x2d: tf.Tensor2D) => tf.Tensor2D): tf.Tensor3D {
  const [batch, length, width] = x.shape;
  // Flattening to [B·T, in] keeps one plain 2-D matMul per layer, the fastest path on
  // every backend (the wasm backend leaves XNNPACK for batched matMuls, DESIGN §7).
  const y = layer(tf.reshape(x, [batch * length, width])); // [B·T, out]
  return tf.reshape(y, [batch, length, y.shape[1]]); // [B, T, out]
}
