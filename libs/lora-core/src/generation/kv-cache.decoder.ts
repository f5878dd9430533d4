/**
 * Incremental decoding with a key/value cache for the architectures of `models/`.
 * `CausalLM.forward` recomputes every position on each call, O(T²) work per generated token;
 * with the cache each new token costs one position.
 *
 * The rotary decoders (Llama, Mistral, Qwen2, Qwen3, Phi-3) decode through their own block
 * code (`LlamaModel.decodeHidden`), with this class holding the cache, so a family's options
 * apply to generation without a second copy of its forward. GPT-2 is decoded here from its
 * public surface (`baseParameters()` by Hugging Face key, `linearLayers()` by module path)
 * and its building blocks (`nn.ops`, `LoraLinear.apply`). Either way adapters, merges and
 * the active-adapter switch behave exactly as in `forward`. `test/generation.spec.ts` checks cached logits against
 * `forward` at every position. Batch size is 1: sample generations and the CLI decode one
 * prompt at a time, which needs neither left padding nor per-row positions.
 */
import * as tf from '@tensorflow/tfjs';

import { batchedMatMul } from '../backend/matmul.ops';
import type { CausalLM, HfParameter } from '../models/causal-lm.model';
import { MASKED_SCORE } from '../models/causal-lm.model';
import { LlamaModel } from '../models/llama.model';
import type { LoraForwardContext, LoraLinear } from '../models/lora-linear.layer';
import type { Gpt2Config } from '../models/model.config';
import { activation, layerNorm, mergeHeads, splitHeads } from '../models/nn.ops';

/** Per-layer cached keys and values, [1, heads, T_past, D] each. */
interface LayerCache {
  k: tf.Tensor4D;
  v: tf.Tensor4D;
}

export class KvCacheDecoder {
  private readonly params = new Map<string, HfParameter>();
  private readonly linears = new Map<string, LoraLinear>();
  private cache: LayerCache[] = [];
  private pastLength = 0;

  /** `adapter`: the adapter whose branch is added (null = base model). */
  constructor(
    private readonly model: CausalLM,
    private readonly adapter: string | null,
  ) {
    for (const p of model.baseParameters()) this.params.set(p.key, p);
    for (const layer of model.linearLayers()) this.linears.set(layer.path, layer);
  }

  /** Tokens already in the cache. */
  get length(): number {
    return this.pastLength;
  }

  /**
   * Appends `ids` (positions length..length+n-1) to the cache and returns the logits of the
   * last new position as a [1, V] tensor the caller disposes.
   */
  step(ids: readonly number[]): tf.Tensor2D {
    if (ids.length === 0) throw new RangeError('decoder step needs at least one token');
    const max = this.model.config.maxPositions;
    if (this.model.config.modelType === 'gpt2' && this.pastLength + ids.length > max) {
      throw new RangeError(`sequence would exceed n_positions ${max}`);
    }
    const ctx: LoraForwardContext = {
      activeAdapter: this.adapter,
      training: false,
      dropoutSeed: 0,
    };
    const newCache: LayerCache[] = [];
    const logits = tf.tidy(() => {
      const input = tf.tensor2d([...ids], [1, ids.length], 'int32'); // [1, Tn]
      const hidden =
        this.model.config.modelType === 'gpt2'
          ? this.gpt2(this.model.config, input, ctx, newCache)
          : this.rotary(input, ctx, newCache);
      for (const entry of newCache) {
        tf.keep(entry.k);
        tf.keep(entry.v);
      }
      return hidden;
    });
    for (const entry of this.cache) {
      entry.k.dispose();
      entry.v.dispose();
    }
    this.cache = newCache;
    this.pastLength += ids.length;
    return logits;
  }

  dispose(): void {
    for (const entry of this.cache) {
      entry.k.dispose();
      entry.v.dispose();
    }
    this.cache = [];
    this.pastLength = 0;
  }

  // ---- architectures -------------------------------------------------------------------

  private param(key: string): tf.Tensor {
    const parameter = this.params.get(key);
    if (!parameter) throw new Error(`decoder: model has no parameter "${key}"`);
    // Looked up on every use: merging an adapter replaces a layer's weight tensor.
    return parameter.tensor();
  }

  private linear(path: string, x: tf.Tensor2D, ctx: LoraForwardContext): tf.Tensor2D {
    const layer = this.linears.get(path);
    if (!layer) throw new Error(`decoder: model has no linear layer "${path}"`);
    return layer.apply(x, ctx);
  }

  /** Additive causal bias for Tn new queries over Tp + Tn keys: [1, 1, Tn, Tp+Tn]. */
  private causalBias(newLength: number): tf.Tensor4D {
    const total = this.pastLength + newLength;
    const bias = new Float32Array(newLength * total);
    for (let i = 0; i < newLength; i++) {
      for (let j = this.pastLength + i + 1; j < total; j++) bias[i * total + j] = MASKED_SCORE;
    }
    return tf.tensor4d(bias, [1, 1, newLength, total]);
  }

  /** Concatenates the layer's past keys/values with the new ones along time. */
  private extend(
    layerIndex: number,
    k: tf.Tensor4D,
    v: tf.Tensor4D,
    out: LayerCache[],
  ): LayerCache {
    const past = this.cache[layerIndex];
    const entry = past
      ? { k: tf.concat([past.k, k], 2), v: tf.concat([past.v, v], 2) } // [1, H, Tp+Tn, D]
      : { k, v };
    out.push(entry);
    return entry;
  }

  /** Final hidden state of the last position → logits [1, V] (lm_head or the tied embedding). */
  private head(last: tf.Tensor2D, ctx: LoraForwardContext): tf.Tensor2D {
    return this.model.headLogits(last, ctx); // [1, V]
  }

  private gpt2(
    config: Gpt2Config,
    ids: tf.Tensor2D,
    ctx: LoraForwardContext,
    out: LayerCache[],
  ): tf.Tensor2D {
    const { hiddenSize: C, numHeads: H, layerNormEpsilon: eps } = config;
    const headDim = C / H;
    const n = ids.shape[1];
    const positions = tf.range(this.pastLength, this.pastLength + n, 1, 'int32'); // [Tn]
    let x = tf.add<tf.Tensor3D>(
      this.model.embedTokens(ids),
      tf.gather(this.param('transformer.wpe.weight'), positions),
    ); // [1, Tn, C]
    const bias = this.causalBias(n); // [1, 1, Tn, Tall]
    for (let i = 0; i < config.numLayers; i++) {
      const p = `transformer.h.${i}`;
      const h = layerNorm(x, this.param(`${p}.ln_1.weight`), this.param(`${p}.ln_1.bias`), eps); // [1, Tn, C]
      const qkv = this.linear(`${p}.attn.c_attn`, tf.reshape(h, [n, C]), ctx); // [Tn, 3C]
      const [q, k, v] = tf.split(tf.reshape(qkv, [1, n, 3 * C]), 3, -1) as [
        tf.Tensor3D,
        tf.Tensor3D,
        tf.Tensor3D,
      ]; // 3 × [1, Tn, C]
      const cached = this.extend(i, splitHeads(k, H, headDim), splitHeads(v, H, headDim), out); // [1, H, Tall, D]
      let scale = config.scaleAttnWeights ? 1 / Math.sqrt(headDim) : 1;
      if (config.scaleAttnByInverseLayerIdx) scale /= i + 1;
      const scores = tf.add<tf.Tensor4D>(
        tf.mul(batchedMatMul(splitHeads(q, H, headDim), cached.k, true), scale),
        bias,
      ); // [1, H, Tn, Tall]
      const attended: tf.Tensor4D = batchedMatMul(tf.softmax(scores, -1), cached.v); // [1, H, Tn, D]
      const y = this.linear(`${p}.attn.c_proj`, tf.reshape(mergeHeads(attended), [n, C]), ctx); // [Tn, C]
      x = tf.add(x, tf.reshape(y, [1, n, C])); // [1, Tn, C]
      const h2 = layerNorm(x, this.param(`${p}.ln_2.weight`), this.param(`${p}.ln_2.bias`), eps); // [1, Tn, C]
      const up = activation(
        this.linear(`${p}.mlp.c_fc`, tf.reshape(h2, [n, C]), ctx),
        config.activation,
      ) as tf.Tensor2D; // [Tn, inner]
      x = tf.add(x, tf.reshape(this.linear(`${p}.mlp.c_proj`, up, ctx), [1, n, C])); // [1, Tn, C]
    }
    const last = tf.slice(x, [0, n - 1, 0], [1, 1, C]); // [1, 1, C]
    const final = layerNorm(
      last,
      this.param('transformer.ln_f.weight'),
      this.param('transformer.ln_f.bias'),
      eps,
    ); // [1, 1, C]
    return this.head(tf.reshape(final, [1, C]), ctx); // [1, V]
  }

  /** A rotary decoder: the model's own blocks, with this decoder's cache. */
  private rotary(ids: tf.Tensor2D, ctx: LoraForwardContext, out: LayerCache[]): tf.Tensor2D {
    if (!(this.model instanceof LlamaModel)) {
      throw new Error(`decoder: no incremental decoding for ${this.model.config.modelType}`);
    }
    const bias = this.causalBias(ids.shape[1]); // [1, 1, Tn, Tall]
    const final = this.model.decodeHidden(ids, this.pastLength, bias, ctx, (i) => (k, v) => {
      const { k: kAll, v: vAll } = this.extend(i, k, v, out); // [1, KV, Tall, D] each
      return { k: kAll, v: vAll };
    }); // [1, C]
    return this.head(final, ctx); // [1, V]
  }
}
