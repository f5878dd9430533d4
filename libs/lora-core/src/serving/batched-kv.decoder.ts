/**
 * Batched incremental decoding for serving: many sequences, each with its own adapter (or the
 * bare base), decoded together over one loaded frozen base with a key/value cache.
 *
 * - **Shared frozen product.** Every linear layer computes x·W0 once for the whole batch
 *   (on the host-weight path of `wasm-blas` too); each row adds its own adapter's branch
 *   through `RowAdapterBatch` (Punica / S-LoRA), whose per-module layouts are built once per
 *   row set and reused by every step until it changes.
 * - **Per-row positions.** Rows sit at different lengths. The cache is one tensor per layer,
 *   [B, KV, W, D], each row's keys right-aligned with left padding; the attention bias masks
 *   the padding (and any other invalid column) per row, and RoPE uses each row's own
 *   positions, so a row decodes exactly as it would alone. A masked score is −1e9, whose
 *   softmax weight is exactly 0 in float32, so padding changes no sum.
 * - **Continuous batching.** Each `step` names the rows it advances. While the row set is
 *   unchanged a step only appends to the cache. When it changes, the cache is rebuilt once:
 *   surviving rows' valid keys are copied into the new layout (no recomputation), rows absent
 *   from the step are parked in their own tensors until they come back or are released, and
 *   new rows start empty. The copy costs one pass over the cache, like a step's attention.
 *
 * GPT-2 and the rotary families decode through their own blocks (`decodeHiddenFor`).
 */
import * as tf from '@tensorflow/tfjs';

import { decodeHiddenFor, type DecodeHidden } from '../generation/kv-cache.decoder';
import { MASKED_SCORE, type CausalLM } from '../models/causal-lm.model';
import type { LoraForwardContext } from '../models/lora-linear.layer';
import { contextLength } from '../models/model.config';
import type { ServingAdapter } from './adapter.registry';
import { RowAdapterBatch, type RowAdapterLayout } from './row-adapter.batch';

/** One row of a decode step. */
export interface DecodeRow {
  /** The sequence (request) whose cache this row extends. */
  id: string;
  /** New tokens: the prompt on the sequence's first step, then the token just sampled. */
  tokens: readonly number[];
  /** The sequence's adapter, fixed for its life; null = the base model. */
  adapter: ServingAdapter | null;
}

export interface BatchedKvDecoderOptions {
  /** `RowAdapterBatch`'s layout; default `auto` (the cheaper one per module and backend). */
  adapterLayout?: RowAdapterLayout;
}

/** Keys and values of one layer, [rows, KV, width, D] each. */
interface LayerKv {
  k: tf.Tensor4D;
  v: tf.Tensor4D;
}

interface SequenceState {
  adapter: ServingAdapter | null;
  /** Tokens in its cache, i.e. its next position. */
  length: number;
  /** Its keys and values per layer while it is out of the batch ([1, KV, length, D]). */
  parked: LayerKv[] | null;
}

export class BatchedKvDecoder {
  private readonly decodeHidden: DecodeHidden;
  private readonly sequences = new Map<string, SequenceState>();
  /** Sequence ids of the batch rows, in row order. */
  private order: string[] = [];
  /** Per layer; empty while the batch holds no keys yet. */
  private cache: LayerKv[] = [];
  /** Per row, 1 where a cache column holds one of its keys; each has the cache's width. */
  private valid: Uint8Array[] = [];
  private rowAdapters: RowAdapterBatch | null = null;
  /** A batch row was released: the next step lays the cache out again. */
  private stale = false;
  /** The longest sequence the model decodes: `max_position_embeddings` within any window. */
  readonly maxLength: number;

  private readonly adapterLayout: RowAdapterLayout;

  constructor(
    private readonly model: CausalLM,
    options: BatchedKvDecoderOptions = {},
  ) {
    this.adapterLayout = options.adapterLayout ?? 'auto';
    this.decodeHidden = decodeHiddenFor(model);
    const merged = model.adapterNames().filter((name) => model.isMerged(name));
    if (merged.length > 0) {
      throw new Error(
        `adapter(s) ${merged.join(', ')} are merged into the base weights; unmerge before serving`,
      );
    }
    this.maxLength = contextLength(model.config);
  }

  /** Tokens in `id`'s cache (0 for an unknown sequence). */
  length(id: string): number {
    return this.sequences.get(id)?.length ?? 0;
  }

  /** Sequences with a cache, in the batch or parked. */
  get sequenceIds(): string[] {
    return [...this.sequences.keys()];
  }

  /**
   * Appends each row's tokens to its sequence (created on first sight) and returns the logits
   * after each row's last new token, [rows, V] in `rows` order; the caller disposes them.
   */
  step(rows: readonly DecodeRow[]): tf.Tensor2D {
    this.validateRows(rows);
    if (this.stale || !sameOrder(this.order, rows)) this.rebuild(rows);
    const batch = rows.length;
    const newLength = Math.max(...rows.map((r) => r.tokens.length));
    const width = this.valid[0].length;
    const total = width + newLength;

    // New tokens are right-aligned, so every row's last position is column newLength − 1.
    const ids = new Int32Array(batch * newLength);
    const positions: number[][] = [];
    const fresh: Uint8Array[] = [];
    rows.forEach((row, b) => {
      const pad = newLength - row.tokens.length;
      const start = this.sequences.get(row.id)!.length;
      row.tokens.forEach((token, t) => (ids[b * newLength + pad + t] = token));
      // A padding slot is never attended to; any position keeps RoPE finite.
      positions.push(Array.from({ length: newLength }, (_, t) => start + Math.max(t - pad, 0)));
      fresh.push(Uint8Array.from({ length: newLength }, (_, t) => (t >= pad ? 1 : 0)));
    });
    const bias = new Float32Array(batch * newLength * total).fill(MASKED_SCORE);
    for (let b = 0; b < batch; b++) {
      for (let q = 0; q < newLength; q++) {
        const at = (b * newLength + q) * total;
        for (let c = 0; c < width; c++) if (this.valid[b][c]) bias[at + c] = 0;
        for (let c = 0; c <= q; c++) if (fresh[b][c]) bias[at + width + c] = 0;
      }
    }

    const ctx: LoraForwardContext = {
      activeAdapter: null,
      training: false,
      dropoutSeed: 0,
      rowAdapters: this.rowAdapters!,
    };
    const next: LayerKv[] = [];
    let logits: tf.Tensor2D;
    try {
      logits = tf.tidy(() => {
        const input = tf.tensor2d(ids, [batch, newLength], 'int32'); // [B, Tn]
        const attentionBias = tf.tensor4d(bias, [batch, 1, newLength, total]); // [B, 1, Tn, W+Tn]
        const final = this.decodeHidden(input, positions, attentionBias, ctx, (i) => (k, v) => {
          const past = this.cache[i];
          const entry = past
            ? { k: tf.concat([past.k, k], 2), v: tf.concat([past.v, v], 2) } // [B, KV, W+Tn, D]
            : { k, v };
          next.push({ k: tf.keep(entry.k), v: tf.keep(entry.v) });
          return entry;
        }); // [B, C]
        return this.model.headLogits(final, ctx); // [B, V]
      });
    } catch (error) {
      disposeKv(next);
      throw error;
    }
    this.disposeCache();
    this.cache = next;
    this.valid = this.valid.map((columns, b) => concatMask(columns, fresh[b]));
    rows.forEach((row) => (this.sequences.get(row.id)!.length += row.tokens.length));
    return logits;
  }

  /** Forgets sequence `id` and frees its cache (a finished or cancelled request). */
  release(id: string): void {
    const state = this.sequences.get(id);
    if (!state) return;
    disposeKv(state.parked ?? []);
    this.sequences.delete(id);
    // Its columns stay in the batch cache until the next step's rebuild drops them.
    if (this.order.includes(id)) this.stale = true;
  }

  dispose(): void {
    for (const id of [...this.sequences.keys()]) this.release(id);
    this.disposeCache();
    this.rowAdapters?.dispose();
    this.rowAdapters = null;
    this.order = [];
    this.valid = [];
  }

  private validateRows(rows: readonly DecodeRow[]): void {
    if (rows.length === 0) throw new RangeError('a decode step needs at least one row');
    const vocab = this.model.config.vocabSize;
    const seen = new Set<string>();
    for (const row of rows) {
      if (seen.has(row.id)) throw new RangeError(`sequence "${row.id}" appears twice in one step`);
      seen.add(row.id);
      if (row.tokens.length === 0) {
        throw new RangeError(`sequence "${row.id}": a step needs at least one token`);
      }
      for (const id of row.tokens) {
        if (!Number.isInteger(id) || id < 0 || id >= vocab) {
          throw new RangeError(`token id ${id} is outside the vocabulary (0..${vocab - 1})`);
        }
      }
      const state = this.sequences.get(row.id);
      if (state && state.adapter !== row.adapter) {
        throw new RangeError(`sequence "${row.id}" cannot change adapter mid-sequence`);
      }
      const length = (state?.length ?? 0) + row.tokens.length;
      if (length > this.maxLength) {
        throw new RangeError(
          `sequence "${row.id}" would reach ${length} tokens; the model allows ${this.maxLength}`,
        );
      }
    }
  }

  /**
   * Lays the cache out for `rows`: each row's valid keys (from the current batch, parked, or
   * none for a new sequence) right-aligned and left-padded to the longest. Rows leaving the
   * batch are parked; released ones are dropped.
   */
  private rebuild(rows: readonly DecodeRow[]): void {
    const current = new Map(this.order.map((id, b) => [id, b]));
    const wanted = new Set(rows.map((r) => r.id));
    const pieces = new Map<string, LayerKv[]>();
    for (const [id, b] of current) {
      const state = this.sequences.get(id);
      if (!state) continue; // released while in the batch
      const kv = this.extractRow(b);
      if (wanted.has(id)) pieces.set(id, kv);
      else state.parked = kv;
    }
    for (const row of rows) {
      const state = this.sequences.get(row.id);
      if (!state) {
        this.sequences.set(row.id, { adapter: row.adapter, length: 0, parked: null });
      } else if (state.parked) {
        pieces.set(row.id, state.parked);
        state.parked = null;
      }
    }
    const lengths = rows.map((r) => this.sequences.get(r.id)!.length);
    const width = Math.max(...lengths);
    this.disposeCache();
    if (width > 0) {
      const layers = [...pieces.values()][0]; // some row has keys when width > 0
      this.cache = layers.map((shapes, layer) =>
        tf.tidy(() => {
          const [, KV, , D] = shapes.k.shape;
          const padded = (pick: (kv: LayerKv) => tf.Tensor4D) =>
            rows.map((row, b) => {
              const piece = pieces.get(row.id);
              if (!piece) return tf.zeros<tf.Rank.R4>([1, KV, width, D]); // [1, KV, W, D]
              const t = pick(piece[layer]); // [1, KV, len, D]
              return tf.pad(t, [
                [0, 0],
                [0, 0],
                [width - lengths[b], 0],
                [0, 0],
              ]); // [1, KV, W, D]
            });
          return {
            k: tf.concat(
              padded((kv) => kv.k),
              0,
            ), // [B, KV, W, D]
            v: tf.concat(
              padded((kv) => kv.v),
              0,
            ), // [B, KV, W, D]
          };
        }),
      );
    }
    for (const kv of pieces.values()) disposeKv(kv);
    this.valid = lengths.map((length) =>
      Uint8Array.from({ length: width }, (_, c) => (c >= width - length ? 1 : 0)),
    );
    this.order = rows.map((r) => r.id);
    this.stale = false;
    this.rowAdapters?.dispose();
    this.rowAdapters = new RowAdapterBatch(
      rows.map((r) => this.sequences.get(r.id)!.adapter),
      this.adapterLayout,
    );
  }

  /** Row b's valid keys and values per layer, [1, KV, length, D], compacted. */
  private extractRow(b: number): LayerKv[] {
    const columns: number[] = [];
    this.valid[b].forEach((ok, c) => {
      if (ok) columns.push(c);
    });
    return tf.tidy(() => {
      const index = tf.tensor1d(columns, 'int32'); // [len]
      const take = (t: tf.Tensor4D) =>
        tf.gather<tf.Tensor4D>(tf.slice(t, [b, 0, 0, 0], [1, -1, -1, -1]), index, 2); // [1, KV, len, D]
      return this.cache.map(({ k, v }) => ({ k: take(k), v: take(v) }));
    });
  }

  private disposeCache(): void {
    disposeKv(this.cache);
    this.cache = [];
  }
}

function sameOrder(order: readonly string[], rows: readonly DecodeRow[]): boolean {
  return order.length === rows.length && rows.every((row, b) => order[b] === row.id);
}

function concatMask(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function disposeKv(kv: readonly LayerKv[]): void {
  for (const { k, v } of kv) {
    k.dispose();
    v.dispose();
  }
}
