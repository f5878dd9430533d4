/**
 * AdamW (Loshchilov & Hutter 2019, https://arxiv.org/abs/1711.05101) with decoupled weight
 * decay, written out so its state can be checkpointed and restored bit-exactly (tfjs's own
 * `tf.train.adam` has no weight decay and hides its iteration counter).
 *
 * The update is `torch.optim.AdamW`'s single-tensor path (torch v1.13–2.x `optim/adamw.py`,
 * amsgrad off), operation for operation:
 *
 *   t ← t + 1
 *   θ ← θ · (1 − lr·λ)                         decoupled decay, before the moments
 *   m ← β1·m + (1 − β1)·g
 *   v ← β2·v + (1 − β2)·g²
 *   θ ← θ − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)
 *
 * The bias corrections are computed in float64 on the host, as torch does with Python floats;
 * tensor maths is float32. `test/trainer.adamw.spec.ts` checks it against torch
 * (`tools/reference/adamw_step.py`).
 */
import * as tf from '@tensorflow/tfjs';

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  epsilon: number;
  weightDecay: number;
}

/** PyTorch's defaults, except weight decay, which HF's Trainer also defaults to 0. */
export const DEFAULT_ADAMW: AdamWOptions = {
  beta1: 0.9,
  beta2: 0.999,
  epsilon: 1e-8,
  weightDecay: 0,
};

/** Host copy of the optimizer state, as stored in a checkpoint. */
export interface AdamWState {
  /** Completed updates (torch's `state['step']`). */
  iteration: number;
  /** First moments by parameter name. */
  m: Map<string, Float32Array>;
  /** Second moments by parameter name. */
  v: Map<string, Float32Array>;
}

interface Slot {
  param: tf.Variable;
  m: tf.Variable;
  v: tf.Variable;
}

export class AdamW {
  readonly options: AdamWOptions;
  private readonly slots = new Map<string, Slot>();
  private iterationCount = 0;

  /** `params`: trainable variables under stable names (checkpoints key moments by name). */
  constructor(params: Map<string, tf.Variable>, options: Partial<AdamWOptions> = {}) {
    this.options = { ...DEFAULT_ADAMW, ...options };
    const { beta1, beta2, epsilon, weightDecay } = this.options;
    if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1)) {
      throw new RangeError(`AdamW betas must be in [0, 1) (got ${beta1}, ${beta2})`);
    }
    if (!(epsilon > 0)) throw new RangeError(`AdamW epsilon must be > 0 (got ${epsilon})`);
    if (!(weightDecay >= 0)) {
      throw new RangeError(`AdamW weight decay must be >= 0 (got ${weightDecay})`);
    }
    for (const [name, param] of params) {
      // Moments are Variables (updated in place with assign), never trainable themselves.
      const m = tf.variable(tf.zerosLike(param), false); // [param shape]
      const v = tf.variable(tf.zerosLike(param), false); // [param shape]
      this.slots.set(name, { param, m, v });
    }
  }

  get iteration(): number {
    return this.iterationCount;
  }

  /** Bytes held by the moments (the optimizer-state cost LoRA saves). */
  stateBytes(): number {
    let bytes = 0;
    for (const slot of this.slots.values()) bytes += 2 * slot.param.size * 4;
    return bytes;
  }

  /**
   * One update with learning rate `lr`. `grads` holds one gradient per parameter name;
   * the caller owns and disposes them.
   */
  step(grads: Map<string, tf.Tensor>, lr: number): void {
    const { beta1, beta2, epsilon, weightDecay } = this.options;
    this.iterationCount += 1;
    const t = this.iterationCount;
    const biasCorrection1 = 1 - beta1 ** t;
    const biasCorrection2Sqrt = Math.sqrt(1 - beta2 ** t);
    const stepSize = lr / biasCorrection1;
    const decay = 1 - lr * weightDecay;
    for (const [name, slot] of this.slots) {
      const grad = grads.get(name);
      if (!grad) throw new Error(`AdamW: no gradient for parameter "${name}"`);
      tf.tidy(() => {
        const decayed = weightDecay > 0 ? tf.mul(slot.param, decay) : slot.param; // [shape]
        const m = tf.add(tf.mul(slot.m, beta1), tf.mul(grad, 1 - beta1)); // [shape]
        const v = tf.add(tf.mul(slot.v, beta2), tf.mul(tf.square(grad), 1 - beta2)); // [shape]
        const denom = tf.add(tf.div(tf.sqrt(v), biasCorrection2Sqrt), epsilon); // [shape]
        const param = tf.sub(decayed, tf.mul(tf.div(m, denom), stepSize)); // [shape]
        slot.m.assign(m);
        slot.v.assign(v);
        slot.param.assign(param);
      });
    }
  }

  /** Copies the state to the host (for a checkpoint). */
  getState(): AdamWState {
    const m = new Map<string, Float32Array>();
    const v = new Map<string, Float32Array>();
    for (const [name, slot] of this.slots) {
      m.set(name, new Float32Array(slot.m.dataSync()));
      v.set(name, new Float32Array(slot.v.dataSync()));
    }
    return { iteration: this.iterationCount, m, v };
  }

  /**
   * `getState()` with asynchronous reads: the webgpu backend cannot read a tensor
   * synchronously. Same values on every backend.
   */
  async getStateAsync(): Promise<AdamWState> {
    const m = new Map<string, Float32Array>();
    const v = new Map<string, Float32Array>();
    for (const [name, slot] of this.slots) {
      m.set(name, new Float32Array(await slot.m.data<'float32'>()));
      v.set(name, new Float32Array(await slot.v.data<'float32'>()));
    }
    return { iteration: this.iterationCount, m, v };
  }

  /** Restores a state produced by `getState` for the same parameter names and shapes. */
  setState(state: AdamWState): void {
    if (!Number.isSafeInteger(state.iteration) || state.iteration < 0) {
      throw new RangeError(`AdamW: invalid iteration ${state.iteration}`);
    }
    for (const [name, slot] of this.slots) {
      const m = state.m.get(name);
      const v = state.v.get(name);
      if (!m || !v) throw new Error(`AdamW state has no moments for "${name}"`);
      if (m.length !== slot.param.size || v.length !== slot.param.size) {
        throw new Error(
          `AdamW state for "${name}" has ${m.length} values, expected ${slot.param.size}`,
        );
      }
      // assign() shares the new tensor's data; tidy releases the temporary handle.
      tf.tidy(() => {
        slot.m.assign(tf.tensor(m, slot.param.shape)); // [shape]
        slot.v.assign(tf.tensor(v, slot.param.shape)); // [shape]
      });
    }
    const extra = [...state.m.keys()].filter((k) => !this.slots.has(k));
    if (extra.length > 0)
      throw new Error(`AdamW state has moments for unknown parameters: ${extra.join(', ')}`);
    this.iterationCount = state.iteration;
  }

  dispose(): void {
    for (const slot of this.slots.values()) {
      slot.m.dispose();
      slot.v.dispose();
    }
    this.slots.clear();
  }
}
