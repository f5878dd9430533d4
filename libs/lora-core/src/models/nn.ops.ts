/**
 * Tensor building blocks shared by the architectures. Each mirrors the transformers
 * implementation it names, in float32; callers run them inside `tf.tidy`.
 */
import * as tf from '@tensorflow/tfjs';

import {
  GELU_TANH_KERNEL,
  SILU_KERNEL,
  hasFusedActivation,
} from '../backend/activation.kernels';
import type { Gpt2Activation } from './model.config';

/** torch.nn.LayerNorm over the last axis: biased variance, as torch computes it. */
export function layerNorm(x: tf.Tensor3D, gamma: tf.Tensor, beta: tf.Tensor, eps: number): tf.Tensor3D {
  const mean = tf.mean(x, -1, true); // [B, T, 1]
  const centered = tf.sub(x, mean); // [B, T, C]
  const variance = tf.mean(tf.square(centered), -1, true); // [B, T, 1]
  const normed = tf.mul(centered, tf.rsqrt(tf.add(variance, eps))); // [B, T, C]
  return tf.add(tf.mul(normed, gamma), beta); // [B, T, C]
}

/** LlamaRMSNorm (Zhang & Sennrich 2019): x / √(mean(x²) + eps) · w, no centring, no bias. */
export function rmsNorm(x: tf.Tensor3D, weight: tf.Tensor, eps: number): tf.Tensor3D {
  const meanSquare = tf.mean(tf.square(x), -1, true); // [B, T, 1]
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(meanSquare, eps))), weight); // [B, T, C]
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
