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
import { frozenMatMul, matMul2d } from '../backend/matmul.ops';
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
}

export class LoraLinear {
  /** [in, out]. A plain tensor in LoRA mode, a `tf.Variable` in full-parameter mode. */
  weight: tf.Tensor2D;
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
    weight: tf.Tensor2D,
    bias: tf.Tensor1D | null,
  ) {
    this.weight = weight;
    this.bias = bias;
  }

  /** Leaf module name, the unit PEFT's `all-linear` and defaults are expressed in. */
  get name(): string {
    return this.path.slice(this.path.lastIndexOf('.') + 1);
  }

  /** x [N, in] → [N, out]. */
  apply(x: tf.Tensor2D, ctx: LoraForwardContext): tf.Tensor2D {
    return tf.tidy(() => {
      let y: tf.Tensor2D = frozenMatMul(x, this.weight); // [N, out]
      if (this.bias) y = tf.add<tf.Tensor2D>(y, this.bias); // [N, out]
      const name = ctx.activeAdapter;
      if (name === null || this.mergedAdapters.includes(name)) return y;
      const adapter = this.adapters.get(name);
      if (!adapter) return y; // this layer is not targeted by the active adapter
      let input = x; // [N, in]
      if (ctx.training && adapter.dropout > 0) {
        input = tf.dropout(x, adapter.dropout, undefined, deriveSeed(ctx.dropoutSeed, this.path)) as tf.Tensor2D;
      }
      // Scale the rank-r intermediate rather than the [N, out] result: same maths, r/out of the work.
      const down = tf.mul<tf.Tensor2D>(matMul2d(input, adapter.a), adapter.scaling); // [N, r]
      return tf.add<tf.Tensor2D>(y, matMul2d(down, adapter.b)); // [N, out]
    });
  }

  /** scaling · A·B, [in, out]. */
  delta(name: string): tf.Tensor2D {
    const adapter = this.requireAdapter(name);
    return tf.tidy(() => tf.mul<tf.Tensor2D>(tf.matMul(adapter.a, adapter.b), adapter.scaling)); // [in, out]
  }

  addAdapter(name: string, adapter: LoraAdapterWeights): void {
    if (adapter.a.shape[0] !== this.inFeatures || adapter.b.shape[1] !== this.outFeatures) {
      throw new Error(`${this.path}: adapter "${name}" shapes do not fit [${this.inFeatures}, ${this.outFeatures}]`);
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
    const delta = this.delta(name);
    this.replaceWeight(tf.tidy(() => tf.add<tf.Tensor2D>(this.weight, delta)));
    delta.dispose();
    this.mergedAdapters.push(name);
  }

  /** W0 ← W0 − scaling·A·B (PEFT unmerges by subtraction, not by keeping a copy of W0). */
  unmerge(name: string): void {
    const index = this.mergedAdapters.indexOf(name);
    if (index < 0) return;
    const delta = this.delta(name);
    this.replaceWeight(tf.tidy(() => tf.sub<tf.Tensor2D>(this.weight, delta)));
    delta.dispose();
    this.mergedAdapters.splice(index, 1);
  }

  dispose(): void {
    this.weight.dispose();
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
      this.weight.dispose();
      this.weight = next;
    }
  }
}
