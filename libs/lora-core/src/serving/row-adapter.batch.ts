/**
 * The LoRA branch of a heterogeneous batch: every batch row carries its own adapter (or
 * none), over one shared frozen product x·W0 (Punica, Chen et al. 2023,
 * https://arxiv.org/abs/2310.18547; S-LoRA, Sheng et al. 2023, https://arxiv.org/abs/2311.03285).
 *
 * Everything a module needs is built once per batch composition (a `RowAdapterBatch` lives
 * until the decoder's rows change) and reused by every decode step; a step copies no adapter
 * weights. Per module, one of two layouts, both exact:
 *
 * - **rank-concat**: the batch's adapters that target the module side by side along the rank,
 *   A_cat = [A₁ | A₂ | …] [in, R] and B_cat = [B₁; B₂; …] [R, out], R = Σ rᵢ; a step is
 *   `((x · A_cat) ⊙ mask) · B_cat`, two plain 2-D products over the whole batch, where row b's
 *   mask holds its adapter's scaling on that adapter's columns and 0 elsewhere. The work grows
 *   with R, not with the row's own r, but it stays on the fast 2-D path of every backend.
 *   Used where a module has one adapter in the batch (R = r: nothing is wasted), and on the
 *   wasm backend without BLAS, whose batched products run off XNNPACK's fast path
 *   (backend/matmul.ops.ts).
 * - **row-stacked**: each row's own A and B stacked, zero-padded to the largest rank,
 *   [B, in, rMax] and [B, rMax, out] (zeros for a row without an adapter on the module); a
 *   step is one batched product per side, Punica's BGMV: the work is the row's own r, and the
 *   memory is one adapter copy per row while the composition lasts. Used elsewhere (cpu,
 *   wasm-blas, GPU backends), where batched products are native.
 *
 * An earlier version gathered the per-row copies of A and B from a per-slot stack on every
 * decode step; that gather cost 15× the frozen product itself on wasm-blas (docs/benchmarks.md,
 * "Serving").
 *
 * Exactness: in rank-concat, a column of x·A_cat is x·(one column of Aᵢ), as alone; the mask
 * zeroes other adapters' columns exactly, and exact zeros add nothing to the up-projection's
 * sums. In row-stacked, padding columns of x·A are 0 and 0·B adds nothing. Either way a row
 * gets scaling·(x·Aᵢ)·Bᵢ as `LoraLinear.apply` computes it alone, up to the summation order of
 * the product kernels.
 */
import * as tf from '@tensorflow/tfjs';

import { avoidTransposedMatMul } from '../backend/matmul.ops';
import type { RowAdapterDelta } from '../models/lora-linear.layer';
import type { ServingAdapter, ServingAdapterModule } from './adapter.registry';

/** How a module's adapters are laid out for the batch; `auto` picks per module (above). */
export type RowAdapterLayout = 'auto' | 'rank-concat' | 'row-stacked';

type ModuleLayout =
  | {
      kind: 'rank-concat';
      a: tf.Tensor2D; // [in, R]
      b: tf.Tensor2D; // [R, out]
      /** Per row, its adapter's scaling on its own columns of R, 0 elsewhere. */
      mask: tf.Tensor3D; // [B, 1, R]
    }
  | {
      kind: 'row-stacked';
      a: tf.Tensor3D; // [B, in, rMax]
      b: tf.Tensor3D; // [B, rMax, out]
      /** Per row, its adapter's scaling (0 for a row without one on the module). */
      scaling: tf.Tensor3D; // [B, 1, 1]
    };

export class RowAdapterBatch implements RowAdapterDelta {
  /** Distinct adapters of the batch, in order of first appearance. */
  private readonly slots: ServingAdapter[] = [];
  /** Per row, its index in `slots`, or -1 for the base model. */
  private readonly rowSlot: Int32Array;
  /** Per module path, built on first use and kept while this batch lives; null = no row targets it. */
  private readonly layouts = new Map<string, ModuleLayout | null>();

  /**
   * `rowAdapters[b]`: row b's adapter, or null for the base model. `layout` forces one layout
   * for every module (tests check both on every backend); by default each module gets the
   * cheaper one for the backend.
   */
  constructor(
    rowAdapters: readonly (ServingAdapter | null)[],
    private readonly layoutChoice: RowAdapterLayout = 'auto',
  ) {
    this.rowSlot = new Int32Array(rowAdapters.length).fill(-1);
    rowAdapters.forEach((adapter, row) => {
      if (adapter === null) return;
      let slot = this.slots.indexOf(adapter);
      if (slot < 0) slot = this.slots.push(adapter) - 1;
      this.rowSlot[row] = slot;
    });
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
    const layout = this.layout(path);
    if (layout === null) return null;
    return tf.tidy((): tf.Tensor2D => {
      const rows = this.rowSlot.length;
      const [n, inFeatures] = x.shape;
      // As LoraLinear.apply: scale the rank-sized intermediate, then up-project.
      if (layout.kind === 'rank-concat') {
        const rank = layout.a.shape[1];
        const down = tf.matMul(x, layout.a); // [N, R]
        const scaled = tf.mul(tf.reshape(down, [rows, n / rows, rank]), layout.mask); // [B, T, R]
        return tf.matMul<tf.Tensor2D>(tf.reshape<tf.Rank.R2>(scaled, [n, rank]), layout.b); // [N, out]
      }
      const x3 = tf.reshape<tf.Rank.R3>(x, [rows, n / rows, inFeatures]); // [B, T, in]
      const down = tf.mul<tf.Tensor3D>(tf.matMul(x3, layout.a), layout.scaling); // [B, T, rMax]
      const up = tf.matMul(down, layout.b); // [B, T, out]
      return tf.reshape<tf.Rank.R2>(up, [n, layout.b.shape[2]]); // [N, out]
    });
  }

  dispose(): void {
    for (const layout of this.layouts.values()) {
      if (layout !== null) for (const tensor of layoutTensors(layout)) tensor.dispose();
    }
    this.layouts.clear();
  }

  private layout(path: string): ModuleLayout | null {
    const cached = this.layouts.get(path);
    if (cached !== undefined) return cached;
    const modules = this.slots.map((adapter) => adapter.modules.get(path));
    const targeting = modules.filter((m) => m !== undefined).length;
    let layout: ModuleLayout | null = null;
    if (targeting > 0) {
      const choice =
        this.layoutChoice !== 'auto'
          ? this.layoutChoice
          : targeting === 1 || avoidTransposedMatMul()
            ? 'rank-concat'
            : 'row-stacked';
      // Built inside the decode step's tidy, but kept for the batch's life.
      layout = tf.tidy(() => {
        const built =
          choice === 'rank-concat' ? this.rankConcat(modules) : this.rowStacked(modules);
        for (const tensor of layoutTensors(built)) tf.keep(tensor);
        return built;
      });
    }
    this.layouts.set(path, layout);
    return layout;
  }

  private rankConcat(modules: (ServingAdapterModule | undefined)[]): ModuleLayout {
    // Each targeting slot's first column in R.
    const offsets = new Int32Array(modules.length).fill(-1);
    const as: tf.Tensor2D[] = [];
    const bs: tf.Tensor2D[] = [];
    let rank = 0;
    modules.forEach((module, slot) => {
      if (module === undefined) return;
      offsets[slot] = rank;
      as.push(module.a); // [in, rᵢ]
      bs.push(module.b); // [rᵢ, out]
      rank += module.a.shape[1];
    });
    const rows = this.rowSlot.length;
    const mask = new Float32Array(rows * rank);
    this.rowSlot.forEach((slot, row) => {
      // A base row, or one whose adapter skips this module, keeps all zeros.
      if (slot < 0 || offsets[slot] < 0) return;
      const start = row * rank + offsets[slot];
      mask.fill(this.slots[slot].scaling, start, start + modules[slot]!.a.shape[1]);
    });
    return {
      kind: 'rank-concat',
      a: as.length === 1 ? tf.clone(as[0]) : tf.concat(as, 1), // [in, R]
      b: bs.length === 1 ? tf.clone(bs[0]) : tf.concat(bs, 0), // [R, out]
      mask: tf.tensor3d(mask, [rows, 1, rank]), // [B, 1, R]
    };
  }

  private rowStacked(modules: (ServingAdapterModule | undefined)[]): ModuleLayout {
    const present = modules.filter((m) => m !== undefined);
    const [inFeatures] = present[0].a.shape;
    const outFeatures = present[0].b.shape[1];
    const rMax = Math.max(...present.map((m) => m.a.shape[1]));
    const zeroA = tf.zeros<tf.Rank.R2>([inFeatures, rMax]); // [in, rMax]
    const zeroB = tf.zeros<tf.Rank.R2>([rMax, outFeatures]); // [rMax, out]
    // Padded once per slot, then one copy per row.
    const paddedA = modules.map((m) => (m ? padColumns(m.a, rMax) : zeroA));
    const paddedB = modules.map((m) => (m ? padRows(m.b, rMax) : zeroB));
    const rowModule = Array.from(this.rowSlot, (slot) => (slot < 0 ? undefined : modules[slot]));
    const scaling = Float32Array.from(this.rowSlot, (slot, row) =>
      rowModule[row] === undefined ? 0 : this.slots[slot].scaling,
    );
    return {
      kind: 'row-stacked',
      a: tf.stack<tf.Tensor2D>(
        Array.from(this.rowSlot, (slot) => (slot < 0 ? zeroA : paddedA[slot])),
      ) as tf.Tensor3D, // [B, in, rMax]
      b: tf.stack<tf.Tensor2D>(
        Array.from(this.rowSlot, (slot) => (slot < 0 ? zeroB : paddedB[slot])),
      ) as tf.Tensor3D, // [B, rMax, out]
      scaling: tf.tensor3d(scaling, [this.rowSlot.length, 1, 1]), // [B, 1, 1]
    };
  }
}

/** The tensors a layout owns. */
function layoutTensors(layout: ModuleLayout): tf.Tensor[] {
  return [layout.a, layout.b, layout.kind === 'rank-concat' ? layout.mask : layout.scaling];
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
