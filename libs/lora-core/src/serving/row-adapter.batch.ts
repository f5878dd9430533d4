/**
 * The LoRA branch of a heterogeneous batch: every batch row carries its own adapter (or
 * none), over one shared frozen product x·W0 (Punica, Chen et al. 2023,
 * https://arxiv.org/abs/2310.18547; S-LoRA, Sheng et al. 2023, https://arxiv.org/abs/2311.03285).
 *
 * Per targeted module, the batch's distinct adapters are stacked once (slot 0 is all zeros,
 * for rows without an adapter, or whose adapter does not target the module) and zero-padded
 * to the largest rank, then each row gathers its own slot: Punica's BGMV, "batched gather
 * matrix-vector multiplication", here as a gather plus a batched product. Zero padding keeps
 * it exact: the extra rank columns of x·A are 0, and 0·B adds nothing, so a row gets
 * scaling·(x·Aᵢ)·Bᵢ as `LoraLinear.apply` computes it alone, up to the summation order of the
 * product kernels.
 */
import * as tf from '@tensorflow/tfjs';

import type { RowAdapterDelta } from '../models/lora-linear.layer';
import type { ServingAdapter } from './adapter.registry';

/** One module's stack over the batch's slots. */
interface ModuleStack {
  a: tf.Tensor3D; // [S+1, in, rMax]
  b: tf.Tensor3D; // [S+1, rMax, out]
}

export class RowAdapterBatch implements RowAdapterDelta {
  /** Distinct adapters of the batch; slot s + 1 holds `slots[s]`. */
  private readonly slots: ServingAdapter[] = [];
  /** Per row, its slot (0 = no adapter). */
  private readonly rowSlot: Int32Array;
  /** Per module path, built on first use and kept while this batch lives; null = no row targets it. */
  private readonly stacks = new Map<string, ModuleStack | null>();
  private readonly rowIndex: tf.Tensor1D; // [B] int32
  private readonly rowScaling: tf.Tensor3D; // [B, 1, 1]

  /** `rowAdapters[b]`: row b's adapter, or null for the base model. */
  constructor(rowAdapters: readonly (ServingAdapter | null)[]) {
    this.rowSlot = new Int32Array(rowAdapters.length);
    rowAdapters.forEach((adapter, row) => {
      if (adapter === null) return;
      let slot = this.slots.indexOf(adapter);
      if (slot < 0) slot = this.slots.push(adapter) - 1;
      this.rowSlot[row] = slot + 1;
    });
    this.rowIndex = tf.tensor1d(this.rowSlot, 'int32');
    // The scale rides with the row, so the stacks need no per-adapter multiply.
    const scaling = Float32Array.from(this.rowSlot, (slot) =>
      slot === 0 ? 0 : this.slots[slot - 1].scaling,
    );
    this.rowScaling = tf.tensor3d(scaling, [rowAdapters.length, 1, 1]);
  }

  /** Rows in the batch. */
  get size(): number {
    return this.rowSlot.length;
  }

  /** Distinct adapters in the batch. */
  get adapterCount(): number {
    return this.slots.length;
  }

  delta(path: string, x: tf.Tensor2D): tf.Tensor2D | null {
    const stack = this.stack(path);
    if (stack === null) return null;
    return tf.tidy(() => {
      const rows = this.rowSlot.length;
      const [n, inFeatures] = x.shape;
      const x3 = tf.reshape<tf.Rank.R3>(x, [rows, n / rows, inFeatures]); // [B, T, in]
      const a = tf.gather(stack.a, this.rowIndex); // [B, in, rMax]
      const b = tf.gather(stack.b, this.rowIndex); // [B, rMax, out]
      // As LoraLinear.apply: scale the rank-r intermediate, then up-project.
      const down = tf.mul<tf.Tensor3D>(tf.matMul(x3, a), this.rowScaling); // [B, T, rMax]
      const up = tf.matMul(down, b); // [B, T, out]
      return tf.reshape<tf.Rank.R2>(up, [n, stack.b.shape[2]]); // [N, out]
    });
  }

  dispose(): void {
    for (const stack of this.stacks.values()) {
      stack?.a.dispose();
      stack?.b.dispose();
    }
    this.stacks.clear();
    this.rowIndex.dispose();
    this.rowScaling.dispose();
  }

  private stack(path: string): ModuleStack | null {
    const cached = this.stacks.get(path);
    if (cached !== undefined) return cached;
    const modules = this.slots.map((adapter) => adapter.modules.get(path));
    const present = modules.filter((m) => m !== undefined);
    let stack: ModuleStack | null = null;
    if (present.length > 0) {
      const [inFeatures] = present[0].a.shape;
      const outFeatures = present[0].b.shape[1];
      const rMax = Math.max(...present.map((m) => m.a.shape[1]));
      stack = tf.tidy(() => {
        const zeroA = tf.zeros<tf.Rank.R2>([inFeatures, rMax]); // [in, rMax]
        const zeroB = tf.zeros<tf.Rank.R2>([rMax, outFeatures]); // [rMax, out]
        const as = [zeroA, ...modules.map((m) => (m ? padColumns(m.a, rMax) : zeroA))];
        const bs = [zeroB, ...modules.map((m) => (m ? padRows(m.b, rMax) : zeroB))];
        return {
          a: tf.keep(tf.stack<tf.Tensor2D>(as) as tf.Tensor3D), // [S+1, in, rMax]
          b: tf.keep(tf.stack<tf.Tensor2D>(bs) as tf.Tensor3D), // [S+1, rMax, out]
        };
      });
    }
    this.stacks.set(path, stack);
    return stack;
  }
}

/** A [in, r] → [in, rMax], zero columns after r. */
function padColumns(a: tf.Tensor2D, rMax: number): tf.Tensor2D {
  return a.shape[1] === rMax
    ? a
    : tf.pad(a, [
        [0, 0],
        [0, rMax - a.shape[1]],
      ]);
}

/** B [r, out] → [rMax, out], zero rows after r. */
function padRows(b: tf.Tensor2D, rMax: number): tf.Tensor2D {
  return b.shape[0] === rMax
    ? b
    : tf.pad(b, [
        [0, rMax - b.shape[0]],
        [0, 0],
      ]);
}
