/**
 * A linear layer that can carry LoRA adapters (Hu et al. 2021, https://arxiv.org/abs/2106.09685):
 *
 *   h = x·W0 + b + scaling · dropout(x)·A·B
 *
 * tfjs stores kernels as [in, out] and multiplies x [N, in] · W [in, out]. Adapters follow
 * the same convention: A is [in, r] and B is [r, out]. PEFT stores the transposes
 * (`lora_A.weight` [r, in], `lora_B.weight` [out, r]) because torch's nn.Linear keeps
 * [out, in]; the PEFT exporter transposes (see docs/lora-core.md).
 *
 * Semantics follow PEFT's `LoraLayer` (peft v0.17.0 `tuners/lora/layer.py`): merging adds
 * scaling·A·B into W0 and skips the adapter branch; unmerging subtracts it again; a
 * disabled layer returns the base output.
 */
import * as tf from '@tensorflow/tfjs';

// Products that stay on the wasm backend's fast MatMul path (added for the trainer, issue 4).
import { HostMatrix, hostMatMul } from '../backend/host-weight.kernels';
import { frozenMatMul, matMul2d } from '../backend/matmul.ops';
import { transpose2d } from '../util/matrix.util';
import { RowBlockedMatrix } from './row-blocked.matrix';
import { addBias, addSameShape } from './nn.ops';
import { deriveSeed } from '../util/rng.util';

/** How the Hugging Face checkpoint stores this layer's weight. */
export type HfWeightLayout =
  /** GPT-2 `Conv1D`: weight [in, out], the tfjs layout already (PEFT `fan_in_fan_out`). */
  | 'conv1d'
  /** torch `nn.Linear`: weight [out, in], transposed on load and export. */
  | 'linear';

export interface LoraAdapterWeights {
  readonly r: number;
  readonly scaling: number;
  readonly dropout: number;
  /** [in, r]; PEFT `lora_A.weight` is its transpose. */
  readonly a: tf.Variable<tf.Rank.R2>;
  /** [r, out]; PEFT `lora_B.weight` is its transpose. */
  readonly b: tf.Variable<tf.Rank.R2>;
}

/** Per-forward adapter state handed down by the model. */
export interface LoraForwardContext {
  /** Adapter whose branch is added, or null for the base output. */
  activeAdapter: string | null;
  /** Enables adapter dropout. */
  training: boolean;
  /** Seed for adapter dropout masks; mixed with the layer path so each layer differs. */
  dropoutSeed: number;
  /**
   * Serving (serving/row-adapters.ts): a different adapter per batch row. When set, it
   * replaces `activeAdapter` (which must be null) and adds each row's own branch.
   */
  rowAdapters?: RowAdapterDelta;
}

/**
 * The LoRA branch of a heterogeneous batch, where every batch row may carry its own adapter
 * (Punica / S-LoRA): for layer `path` and its input x [N, in] (N = rows · tokens per row,
 * row-major), each row's scaling·(x·Aᵢ)·Bᵢ as [N, out], or null when no row's adapter
 * targets the layer.
 */
export interface RowAdapterDelta {
  delta(path: string, x: tf.Tensor2D): tf.Tensor2D | null;
}

export class LoraLinear {
  /**
   * [in, out]. A plain tensor in LoRA mode, a `tf.Variable` in full-parameter mode; null when
   * the frozen weight lives in host memory (`hostWeight`) or in row blocks (`blockWeight`).
   */
  weight: tf.Tensor2D | null;
  /**
   * The frozen weight in host memory, in its Hugging Face layout ([out, in] for nn.Linear,
   * [in, out] for Conv1D), on the `*-blas` backends (backend/host-weight.kernels.ts).
   */
  hostWeight: HostMatrix | null;
  /**
   * The frozen weight as row blocks of its nn.Linear layout [out, in], on webgpu when it is
   * larger than the device can bind at once (models/row-blocked.matrix.ts).
   */
  readonly blockWeight: RowBlockedMatrix | null;
  /** [out] or null. */
  bias: tf.Tensor1D | null;
  readonly adapters = new Map<string, LoraAdapterWeights>();
  /** Adapters currently folded into `weight`, in merge order. */
  readonly mergedAdapters: string[] = [];

  constructor(
    /** Module path in the `*ForCausalLM` model, e.g. `transformer.h.0.attn.c_attn`. */
    readonly path: string,
    readonly inFeatures: number,
    readonly outFeatures: number,
    readonly hfLayout: HfWeightLayout,
    weight: tf.Tensor2D | HostMatrix | RowBlockedMatrix,
    bias: tf.Tensor1D | null,
  ) {
    this.weight = weight instanceof tf.Tensor ? weight : null;
    this.hostWeight = weight instanceof HostMatrix ? weight : null;
    this.blockWeight = weight instanceof RowBlockedMatrix ? weight : null;
    this.bias = bias;
  }

  /** x [N, in] · W0 [in, out] → [N, out], wherever W0 lives. */
  private baseProduct(x: tf.Tensor2D): tf.Tensor2D {
    if (this.hostWeight) {
      // nn.Linear keeps [out, in], so x·W0 is x·storedᵀ; Conv1D keeps [in, out] already.
      return hostMatMul(x, this.hostWeight, this.hfLayout === 'linear'); // [N, out]
    }
    if (this.blockWeight) return this.blockWeight.timesTransposed(x); // [N, out] = x·Wᵀ, W [out, in]
    return frozenMatMul(x, this.weight!); // [N, out]
  }

  /** g [N, out] → g·W0ᵀ [N, in]: the frozen product's gradient to its input. */
  backToInput(g: tf.Tensor2D): tf.Tensor2D {
    if (this.blockWeight) return this.blockWeight.times(g); // [N, in]
    return tf.matMul(g, this.weight!, false, true); // [N, in]
  }

  /** The weight in its Hugging Face layout (a copy), e.g. for saving a merged model. */
  async hfWeightData(): Promise<Float32Array> {
    if (this.hostWeight) return new Float32Array(this.hostWeight.data);
    if (this.blockWeight) {
      const data = await this.blockWeight.data(); // [out, in]
      return this.hfLayout === 'linear' ? data : transpose2d(data, this.outFeatures, this.inFeatures);
    }
    const data = (await this.weight!.data()) as Float32Array; // [in, out]
    return this.hfLayout === 'conv1d'
      ? new Float32Array(data)
      : transpose2d(data, this.inFeatures, this.outFeatures);
  }

  /** Leaf module name, the unit PEFT's `all-linear` and defaults are expressed in. */
  get name(): string {
    return this.path.slice(this.path.lastIndexOf('.') + 1);
  }

  /** x [N, in] → [N, out]. */
  apply(x: tf.Tensor2D, ctx: LoraForwardContext): tf.Tensor2D {
    return tf.tidy(() => {
      let y: tf.Tensor2D = this.baseProduct(x); // [N, out]
      if (this.bias) y = addBias(y, this.bias); // [N, out]
      if (ctx.rowAdapters) {
        const rows = ctx.rowAdapters.delta(this.path, x); // [N, out] or null
        return rows === null ? y : addSameShape(y, rows);
      }
      const name = ctx.activeAdapter;
      if (name === null || this.mergedAdapters.includes(name)) return y;
      const adapter = this.adapters.get(name);
      if (!adapter) return y; // this layer is not targeted by the active adapter
      let input = x; // [N, in]
      if (ctx.training && adapter.dropout > 0) {
        input = tf.dropout(
          x,
          adapter.dropout,
          undefined,
          deriveSeed(ctx.dropoutSeed, this.path),
        ) as tf.Tensor2D;
      }
      // Scale the rank-r intermediate rather than the [N, out] result: same maths, r/out of the work.
      const down = tf.mul<tf.Tensor2D>(matMul2d(input, adapter.a), adapter.scaling); // [N, r]
      return addSameShape(y, matMul2d(down, adapter.b)); // [N, out]
    });
  }

  /** scaling · A·B, [in, out]. */
  delta(name: string): tf.Tensor2D {
    const adapter = this.requireAdapter(name);
    return tf.tidy(() => tf.mul<tf.Tensor2D>(tf.matMul(adapter.a, adapter.b), adapter.scaling)); // [in, out]
  }

  addAdapter(name: string, adapter: LoraAdapterWeights): void {
    if (adapter.a.shape[0] !== this.inFeatures || adapter.b.shape[1] !== this.outFeatures) {
      throw new Error(
        `${this.path}: adapter "${name}" shapes do not fit [${this.inFeatures}, ${this.outFeatures}]`,
      );
    }
    this.adapters.get(name)?.a.dispose();
    this.adapters.get(name)?.b.dispose();
    this.adapters.set(name, adapter);
  }

  deleteAdapter(name: string): void {
    if (this.mergedAdapters.includes(name)) this.unmerge(name);
    const adapter = this.adapters.get(name);
    if (!adapter) return;
    adapter.a.dispose();
    adapter.b.dispose();
    this.adapters.delete(name);
  }

  /** W0 ← W0 + scaling·A·B. */
  merge(name: string): void {
    if (this.mergedAdapters.includes(name)) return;
    this.addDelta(name, 1);
    this.mergedAdapters.push(name);
  }

  /** W0 ← W0 − scaling·A·B (PEFT unmerges by subtraction, not by keeping a copy of W0). */
  unmerge(name: string): void {
    const index = this.mergedAdapters.indexOf(name);
    if (index < 0) return;
    this.addDelta(name, -1);
    this.mergedAdapters.splice(index, 1);
  }

  /** W0 ← W0 + sign·scaling·A·B, in place for a host weight. */
  private addDelta(name: string, sign: 1 | -1): void {
    const delta = this.delta(name); // [in, out]
    if (this.hostWeight) {
      const d = delta.dataSync() as Float32Array; // host weights exist only on wasm/cpu, which read synchronously
      const w = this.hostWeight.data;
      const { inFeatures: K, outFeatures: M } = this;
      if (this.hfLayout === 'conv1d') {
        for (let i = 0; i < d.length; i++) w[i] += sign * d[i];
      } else {
        // stored [out, in]: w[o, i] += d[i, o]
        for (let i = 0; i < K; i++) for (let o = 0; o < M; o++) w[o * K + i] += sign * d[i * M + o];
      }
    } else if (this.blockWeight) {
      this.blockWeight.addTransposed(delta, sign);
    } else {
      const weight = this.weight!;
      this.replaceWeight(
        tf.tidy(() =>
          sign > 0 ? tf.add<tf.Tensor2D>(weight, delta) : tf.sub<tf.Tensor2D>(weight, delta),
        ),
      );
    }
    delta.dispose();
  }

  dispose(): void {
    this.weight?.dispose();
    this.blockWeight?.dispose();
    this.hostWeight = null;
    this.bias?.dispose();
    for (const name of [...this.adapters.keys()]) {
      const adapter = this.adapters.get(name);
      adapter?.a.dispose();
      adapter?.b.dispose();
    }
    this.adapters.clear();
  }

  private requireAdapter(name: string): LoraAdapterWeights {
    const adapter = this.adapters.get(name);
    if (!adapter) throw new Error(`${this.path}: no adapter named "${name}"`);
    return adapter;
  }

  private replaceWeight(next: tf.Tensor2D): void {
    // Survive a caller's tf.tidy: the new weight outlives any scope merge() is called in.
    tf.keep(next);
    if (this.weight instanceof tf.Variable) {
      // Full-parameter mode: keep the Variable (an optimizer may hold it) and assign.
      this.weight.assign(next);
      next.dispose();
    } else {
      this.weight?.dispose();
      this.weight = next;
    }
  }
}
