/**
 * Incremental decoding with a key/value cache for the architectures of `models/`.
 * `CausalLM.forward` recomputes every position on each call, O(T²) work per generated token;
 * with the cache each new token costs one position.
 *
 * The rotary decoders (Llama, Mistral, Qwen2, Qwen3, Phi-3) decode through their own block
 * code (`LlamaModel.decodeHidden`), with the caller holding the cache, so a family's options
 * apply to generation without a second copy of its forward. GPT-2 is decoded here
 * (`Gpt2DecodeBlocks`) from its public surface (`baseParameters()` by Hugging Face key,
 * `linearLayers()` by module path) and its building blocks (`nn.ops`, `LoraLinear.apply`).
 * Either way adapters, merges and the active-adapter switch behave exactly as in `forward`.
 * `test/generation.spec.ts` checks cached logits against `forward` at every position.
 * `KvCacheDecoder` decodes one sequence (sample generations, the CLI); both block
 * implementations also take a batch with per-row positions, which the serving decoder
 * (serving/batched-kv.decoder.ts) uses.
 */
import * as tf from '@tensorflow/tfjs';

import { batchedMatMul } from '../backend/matmul.ops';
import type { CausalLM, HfParameter } from '../models/causal-lm.model';
import { MASKED_SCORE } from '../models/causal-lm.model';
import { LlamaModel, type KvExtender } from '../models/llama.model';
import type { LoraForwardContext, LoraLinear } from '../models/lora-linear.layer';
import type { Gpt2Config } from '../models/model.config';
import { activation, layerNorm, mergeHeads, splitHeads } from '../models/nn.ops';

/** Per-layer cached keys and values, [1, heads, T_past, D] each. */
interface LayerCache {
  k: tf.Tensor4D;
  v: tf.Tensor4D;
}

/**
 * A model's blocks for incremental decoding: ids [B, Tn] at `positions` (the first new
 * position shared by every row, or each row's own [B][Tn]), attention bias [B|1, 1, Tn, Tk],
 * block i's key/value extender → the final-normed hidden state of each row's last position
 * [B, C]. `LlamaModel.decodeHidden` for the rotary families, `Gpt2DecodeBlocks` for GPT-2.
 */
export type DecodeHidden = (
  ids: tf.Tensor2D,
  positions: number | readonly (readonly number[])[],
  bias: tf.Tensor4D,
  ctx: LoraForwardContext,
  cache: (layerIndex: number) => KvExtender,
) => tf.Tensor2D;

/** The model's `DecodeHidden`; throws for an architecture without one. */
export function decodeHiddenFor(model: CausalLM): DecodeHidden {
  if (model instanceof LlamaModel) return model.decodeHidden.bind(model);
  if (model.config.modelType === 'gpt2') {
    const blocks = new Gpt2DecodeBlocks(model, model.config);
    return blocks.decodeHidden.bind(blocks);
  }
  throw new Error(`decoder: no incremental decoding for ${model.config.modelType}`);
}

export class KvCacheDecoder {
  private readonly decodeHidden: DecodeHidden;
  private cache: LayerCache[] = [];
  private pastLength = 0;

  /** `adapter`: the adapter whose branch is added (null = base model). */
  constructor(
    private readonly model: CausalLM,
    private readonly adapter: string | null,
  ) {
    this.decodeHidden = decodeHiddenFor(model);
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
    const ctx: LoraForwardContext = {
      activeAdapter: this.adapter,
      training: false,
      dropoutSeed: 0,
    };
    const newCache: LayerCache[] = [];
    const logits = tf.tidy(() => {
      const input = tf.tensor2d([...ids], [1, ids.length], 'int32'); // [1, Tn]
      const bias = this.causalBias(ids.length); // [1, 1, Tn, Tall]
      const final = this.decodeHidden(input, this.pastLength, bias, ctx, (i) => (k, v) => {
        const entry = this.extend(i, k, v, newCache); // [1, KV, Tall, D] each
        return { k: entry.k, v: entry.v };
      }); // [1, C]
      for (const entry of newCache) {
        tf.keep(entry.k);
        tf.keep(entry.v);
      }
      return this.model.headLogits(final, ctx); // [1, V]
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
}

/**
 * GPT-2 decoded from its public surface (`baseParameters()` by Hugging Face key,
 * `linearLayers()` by module path) and its building blocks (`nn.ops`, `LoraLinear.apply`),
 * so adapters and merges behave exactly as in `forward`.
 */
export class Gpt2DecodeBlocks {
  private readonly params = new Map<string, HfParameter>();
  private readonly linears = new Map<string, LoraLinear>();

  constructor(
    private readonly model: CausalLM,
    private readonly config: Gpt2Config,
  ) {
    for (const p of model.baseParameters()) this.params.set(p.key, p);
    for (const layer of model.linearLayers()) this.linears.set(layer.path, layer);
  }

  /** See `DecodeHidden`. */
  decodeHidden(
    ids: tf.Tensor2D,
    positions: number | readonly (readonly number[])[],
    bias: tf.Tensor4D,
    ctx: LoraForwardContext,
    cache: (layerIndex: number) => KvExtender,
  ): tf.Tensor2D {
    const { config } = this;
    const { hiddenSize: C, numHeads: H, layerNormEpsilon: eps } = config;
    const headDim = C / H;
    const [batch, n] = ids.shape;
    const last = typeof positions === 'number' ? positions + n : Math.max(...positions.flat()) + 1;
    if (last > config.maxPositions) {
      throw new RangeError(`sequence would exceed n_positions ${config.maxPositions}`);
    }
    const positionIds =
      typeof positions === 'number'
        ? tf.range(positions, positions + n, 1, 'int32') // [Tn]
        : tf.tensor2d(positions.flat(), [batch, n], 'int32'); // [B, Tn]
    let x = tf.add<tf.Tensor3D>(
      this.model.embedTokens(ids),
      tf.gather(this.param('transformer.wpe.weight'), positionIds),
    ); // [B, Tn, C]
    for (let i = 0; i < config.numLayers; i++) {
      const p = `transformer.h.${i}`;
      const h = layerNorm(x, this.param(`${p}.ln_1.weight`), this.param(`${p}.ln_1.bias`), eps); // [B, Tn, C]
      const qkv = this.linear(`${p}.attn.c_attn`, tf.reshape(h, [batch * n, C]), ctx); // [B·Tn, 3C]
      const [q, k, v] = tf.split(tf.reshape(qkv, [batch, n, 3 * C]), 3, -1) as [
        tf.Tensor3D,
        tf.Tensor3D,
        tf.Tensor3D,
      ]; // 3 × [B, Tn, C]
      const cached = cache(i)(splitHeads(k, H, headDim), splitHeads(v, H, headDim)); // [B, H, Tall, D]
      let scale = config.scaleAttnWeights ? 1 / Math.sqrt(headDim) : 1;
      if (config.scaleAttnByInverseLayerIdx) scale /= i + 1;
      const scores = tf.add<tf.Tensor4D>(
        tf.mul(batchedMatMul(splitHeads(q, H, headDim), cached.k, true), scale),
        bias,
      ); // [B, H, Tn, Tall]
      const attended: tf.Tensor4D = batchedMatMul(tf.softmax(scores, -1), cached.v); // [B, H, Tn, D]
      const y = this.linear(
        `${p}.attn.c_proj`,
        tf.reshape(mergeHeads(attended), [batch * n, C]),
        ctx,
      ); // [B·Tn, C]
      x = tf.add(x, tf.reshape(y, [batch, n, C])); // [B, Tn, C]
      const h2 = layerNorm(x, this.param(`${p}.ln_2.weight`), this.param(`${p}.ln_2.bias`), eps); // [B, Tn, C]
      const up = activation(
        this.linear(`${p}.mlp.c_fc`, tf.reshape(h2, [batch * n, C]), ctx),
        config.activation,
      ) as tf.Tensor2D; // [B·Tn, inner]
      x = tf.add(x, tf.reshape(this.linear(`${p}.mlp.c_proj`, up, ctx), [batch, n, C])); // [B, Tn, C]
    }
    const lastHidden = tf.slice(x, [0, n - 1, 0], [batch, 1, C]); // [B, 1, C]
    const final = layerNorm(
      lastHidden,
      this.param('transformer.ln_f.weight'),
      this.param('transformer.ln_f.bias'),
      eps,
    ); // [B, 1, C]
    return tf.reshape(final, [batch, C]); // [B, C]
  }

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
}
