/**
 * The model contract shared by every architecture, plus what they have in common: owning
 * parameters under their Hugging Face names, the causal/padding attention bias, and the
 * bookkeeping for named LoRA adapters (PEFT's `add_adapter` / `set_adapter` / `merge` /
 * `unmerge` / `disable_adapter` semantics).
 */
import * as tf from '@tensorflow/tfjs';

import { HostMatrix, hostWeightKernelsActive } from '../backend/host-weight.kernels';
import { deviceBindingLimitBytes } from '../backend/webgpu.backend';
import type { LoraConfig } from '../lora/lora.config';
import type { ShiftedTargets } from '../trainer/token-loss';
import {
  LoraConfigError,
  loraScaling,
  moduleNameMatches,
  validateLoraConfig,
} from '../lora/lora.config';
import { SeededRandom, deriveSeed } from '../util/rng.util';
import { checkpointed } from './gradient-checkpoint';
import { headLoss, type HeadLoss, type LmHead } from './head-loss';
import { LoraLinear, type HfWeightLayout, type LoraForwardContext } from './lora-linear.layer';
import { TokenEmbedding } from './token-embedding';
import type { ModelConfig } from './model.config';
import { ModelWeightsError } from './model.errors';
import { RowBlockedMatrix } from './row-blocked.matrix';
import { transpose2d } from '../util/matrix.util';

export { transpose2d };

/**
 * `lora`: base weights are plain tensors (no gradient, no optimizer state) and only adapter
 * matrices are `tf.Variable`s. `full`: every weight is a trainable `tf.Variable` (the
 * full fine-tuning baseline LoRA is benchmarked against).
 */
export type ParameterMode = 'lora' | 'full';

export interface ForwardOptions {
  /** Enables adapter dropout. Default false (inference). */
  training?: boolean;
  /**
   * Seed for this call's dropout masks. A trainer passes e.g. the step number so a resumed
   * run draws the same masks; when omitted, a per-model counter is used.
   */
  dropoutSeed?: number;
  /**
   * Runs this one call on the base model: the active adapter's branch is skipped in every
   * layer, exactly as with no adapter at all. DPO's reference policy is the base model
   * (`train/dpo.loss.ts`); being per call rather than model state (`disableAdapters`), it
   * cannot outlive the call and leak into the policy pass. Refused while an adapter is merged,
   * since the base weights then hold its delta.
   */
  withoutAdapter?: boolean;
}

/** How a model obtains its initial weights: from a checkpoint, or from a seeded RNG. */
export interface WeightSource {
  /**
   * Returns the tensor stored under the canonical `*ForCausalLM` key in Hugging Face layout.
   * `init` says how a random model would initialise it.
   */
  read(key: string, hfShape: number[], init: 'normal' | 'zeros' | 'ones'): Float32Array;
}

/** One base parameter, addressable by its canonical Hugging Face key. */
export interface HfParameter {
  key: string;
  /** Shape as stored in a Hugging Face checkpoint. */
  hfShape: number[];
  /** True when the tfjs tensor is the transpose of the stored one (nn.Linear weights). */
  transposed: boolean;
  /** Whether the parameter lives in host memory (then `tensor()` throws; use `read()`). */
  host: boolean;
  /**
   * Device buffers holding it: 1, or more when it is kept as row blocks because it exceeds
   * what the device binds at once (webgpu; then `tensor()` throws too); 0 in host memory.
   */
  blocks: number;
  /** The current tensor (after merges), tfjs layout. */
  tensor(): tf.Tensor;
  /** The current values (after merges) in Hugging Face layout, a copy. */
  read(): Promise<Float32Array>;
}

/** Initial adapter values per module path: A [in, r] and B [r, out], row-major. */
export type AdapterWeightsInit = Map<string, { a: Float32Array; b: Float32Array }>;

/** Large negative instead of -inf: fully masked rows (left padding) stay NaN-free. */
export const MASKED_SCORE = -1e9;

export abstract class CausalLM {
  abstract readonly config: ModelConfig;
  /** Hex sha256 of the weights file(s) this model was loaded from; lineage (DESIGN §6). */
  baseModelSha256: string | undefined;
  /**
   * Training forward passes recompute each block's activations in backward instead of
   * keeping them (gradient checkpointing, Chen et al. 2016, https://arxiv.org/abs/1604.06174).
   */
  gradientCheckpointing = false;

  protected readonly parameters: HfParameter[] = [];
  protected readonly linears: LoraLinear[] = [];
  /** Parameters not owned by a linear layer (embeddings, norms); disposed by the model. */
  private readonly standalone: tf.Tensor[] = [];
  private readonly embeddings: TokenEmbedding[] = [];
  private readonly adapterConfigs = new Map<string, LoraConfig>();
  private active: string | null = null;
  private disabled = false;
  private dropoutCounter = 0;

  /**
   * Frozen matrices live in host memory and multiply through OpenBLAS (`*-blas` backends in
   * LoRA mode, backend/host-weight.kernels.ts); otherwise they are tensors of the backend.
   */
  readonly hostWeights: boolean;

  protected constructor(readonly mode: ParameterMode) {
    this.hostWeights = mode === 'lora' && hostWeightKernelsActive();
  }

  /**
   * Model-specific forward on validated inputs, up to the final norm; runs inside `tf.tidy`.
   * Returns the final hidden states flattened to [B·T, C] (rows in the logits' order).
   */
  protected abstract hiddenImpl(
    inputIds: tf.Tensor2D, // [B, T] int32
    attentionBias: tf.Tensor4D, // [B|1, 1, T, T]
    ctx: LoraForwardContext,
  ): tf.Tensor2D; // [B·T, C]

  /** The token embedding (also the head's weight when tied). */
  protected abstract get embedding(): TokenEmbedding;
  /** The untied `lm_head`, or null when tied to the embedding. */
  protected abstract get lmHeadLayer(): LoraLinear | null;

  /** Final logits become cap·tanh(l/cap) when set (Gemma 2's `final_logit_softcapping`). */
  protected get finalLogitSoftcap(): number | null {
    return null;
  }

  /**
   * inputIds [B, T] int32, attentionMask [B, T] (1 = attend, 0 = padding) → logits [B, T, V].
   * Positions are 0..T-1 whatever the mask says, as in transformers' default `position_ids`,
   * so padding belongs on the right for training; left padding changes positions.
   */
  forward(
    inputIds: tf.Tensor2D,
    attentionMask?: tf.Tensor2D,
    opts: ForwardOptions = {},
  ): tf.Tensor3D {
    const [batch, length] = inputIds.shape;
    return tf.tidy(() => {
      const { hidden, ctx } = this.hiddenStates(inputIds, attentionMask, opts); // [B·T, C]
      const logits = this.headLogits(hidden, ctx); // [B·T, V]
      return tf.reshape(logits, [batch, length, this.config.vocabSize]); // [B, T, V]
    });
  }

  /**
   * The training/evaluation loss without whole logits: Σ w·NLL and Σ w·[argmax = target] over
   * the shifted targets of `inputIds` (trainer/token-loss.ts `shiftTargets`), through the
   * fused LM head (models/head-loss.ts). Equals `weightedTokenNllSum`/`weightedCorrectCount`
   * of `forward`'s logits.
   */
  forwardLoss(
    inputIds: tf.Tensor2D,
    attentionMask: tf.Tensor2D | undefined,
    shifted: ShiftedTargets,
    opts: ForwardOptions = {},
  ): HeadLoss {
    const { hidden, ctx } = this.hiddenStates(inputIds, attentionMask, opts); // [B·T, C]
    return headLoss(hidden, this.fusedHeadFor(ctx), shifted, ctx.training);
  }

  /**
   * `forwardLoss` per batch row: row b's Σ w·NLL and Σ w·[argmax = target] over `rows[b]`, the
   * shifted targets of that row alone (`shiftTargets` of one row), as [B] tensors. Each row's
   * hidden states go through the fused head on their own, so every head kind (host, frozen,
   * trainable) serves and each row is scored once; `−nll[b]` is row b's sequence
   * log-probability, what DPO compares (train/dpo.loss.ts).
   */
  forwardRowLosses(
    inputIds: tf.Tensor2D,
    attentionMask: tf.Tensor2D | undefined,
    rows: readonly ShiftedTargets[],
    opts: ForwardOptions = {},
  ): { nll: tf.Tensor1D; correct: tf.Tensor1D } {
    const [batch, length] = inputIds.shape;
    if (rows.length !== batch || rows.some((r) => r.targets.length !== length)) {
      throw new Error(
        `forwardRowLosses: need ${batch} rows of ${length} targets, got ${rows.map((r) => r.targets.length).join(', ')}`,
      );
    }
    const { hidden, ctx } = this.hiddenStates(inputIds, attentionMask, opts); // [B·T, C]
    const width = hidden.shape[1];
    const head = this.fusedHeadFor(ctx);
    const losses = rows.map((shifted, b) =>
      headLoss(tf.slice(hidden, [b * length, 0], [length, width]), head, shifted, ctx.training),
    ); // B × ([], [])
    return {
      nll: tf.stack(losses.map((l) => l.nll)) as tf.Tensor1D, // [B]
      correct: tf.stack(losses.map((l) => l.correct)) as tf.Tensor1D, // [B]
    };
  }

  /** ids [B, T] int32 → token embeddings [B, T, C] (the KV-cache decoder uses it too). */
  embedTokens(ids: tf.Tensor2D): tf.Tensor3D {
    return this.embedding.lookup(ids);
  }

  /** Final hidden states x [N, C] → logits [N, V], through lm_head or the tied embedding. */
  headLogits(x: tf.Tensor2D, ctx: LoraForwardContext): tf.Tensor2D {
    const head = this.lmHeadLayer;
    const logits = head ? head.apply(x, ctx) : this.embedding.logits(x); // [N, V]
    const cap = this.finalLogitSoftcap;
    return cap === null ? logits : tf.mul(tf.tanh(tf.div(logits, cap)), cap); // [N, V]
  }

  /** The head as the fused loss sees it: frozen in host memory, a frozen tensor, or trainable. */
  private fusedHeadFor(ctx: LoraForwardContext): LmHead {
    const layer = this.lmHeadLayer;
    const adapterOnHead =
      layer !== null &&
      ctx.activeAdapter !== null &&
      layer.adapters.has(ctx.activeAdapter) &&
      !layer.mergedAdapters.includes(ctx.activeAdapter);
    // A soft-capped head (Gemma 2) takes the autodiff path: the fused host and chunked kernels
    // compute plain logits. It costs whole [N, V] logits (and their softmax) per step.
    if (this.mode === 'full' || adapterOnHead || this.finalLogitSoftcap !== null)
      return { kind: 'trainable', logits: (x) => this.headLogits(x, ctx) };
    if (layer === null) {
      const e = this.embedding;
      if (e.host) return { kind: 'host', matrix: e.host };
      return {
        kind: 'frozen',
        vocabSize: this.config.vocabSize,
        logits: (x) => e.logits(x), // [n, V]
        backToHidden: (g) => e.backToHidden(g), // [n, C] = g·E
      };
    }
    if (layer.hostWeight) return { kind: 'host', matrix: layer.hostWeight }; // stored [V, C]
    // No adapter on the head here, so its output is the frozen product (plus bias).
    const noAdapter: LoraForwardContext = { ...ctx, activeAdapter: null };
    return {
      kind: 'frozen',
      vocabSize: this.config.vocabSize,
      logits: (x) => layer.apply(x, noAdapter), // [n, V]
      backToHidden: (g) => layer.backToInput(g), // [n, C] = g·Wᵀ
    };
  }

  /** Validated inputs → final hidden states [B·T, C] and the forward context. */
  private hiddenStates(
    inputIds: tf.Tensor2D,
    attentionMask: tf.Tensor2D | undefined,
    opts: ForwardOptions,
  ): { hidden: tf.Tensor2D; ctx: LoraForwardContext } {
    const [batch, length] = inputIds.shape;
    if (inputIds.rank !== 2 || length === 0) {
      throw new Error(
        `forward: inputIds must be [B, T] with T > 0 (got ${JSON.stringify(inputIds.shape)})`,
      );
    }
    if (attentionMask && (attentionMask.shape[0] !== batch || attentionMask.shape[1] !== length)) {
      throw new Error(
        `forward: attentionMask ${JSON.stringify(attentionMask.shape)} does not match inputIds ${JSON.stringify(inputIds.shape)}`,
      );
    }
    if (opts.withoutAdapter && this.linears.some((l) => l.mergedAdapters.length > 0)) {
      throw new Error('forward: a base-model pass needs unmerged adapters; unmerge them first');
    }
    const activeAdapter = this.disabled || opts.withoutAdapter ? null : this.active;
    const training = opts.training ?? false;
    if (
      training &&
      activeAdapter !== null &&
      this.linears.some((l) => l.mergedAdapters.includes(activeAdapter))
    ) {
      throw new Error(`forward: adapter "${activeAdapter}" is merged; unmerge it before training`);
    }
    const ctx: LoraForwardContext = {
      activeAdapter,
      training,
      dropoutSeed: opts.dropoutSeed ?? deriveSeed(this.dropoutCounter++, 'dropout'),
    };
    const ids = inputIds.dtype === 'int32' ? inputIds : tf.cast(inputIds, 'int32'); // [B, T]
    return { hidden: this.hiddenImpl(ids, buildAttentionBias(length, attentionMask), ctx), ctx };
  }

  /**
   * One decoder block, x → body(x). With `gradientCheckpointing` in a training pass, the
   * block keeps only its input and recomputes its activations in backward; `layers` are the
   * block's linear layers, whose active adapter variables get gradients through it, and
   * `constants` every other tensor `body` reads (it must read them from its argument).
   */
  protected runBlock(
    x: tf.Tensor3D,
    ctx: LoraForwardContext,
    layers: readonly LoraLinear[],
    constants: readonly tf.Tensor[],
    body: (x: tf.Tensor3D, constants: readonly tf.Tensor[]) => tf.Tensor3D,
  ): tf.Tensor3D {
    if (!this.gradientCheckpointing || !ctx.training) return body(x, constants);
    const variables: tf.Variable[] = [];
    if (this.mode === 'full') {
      throw new Error('gradient checkpointing is implemented for LoRA training only');
    }
    const name = ctx.activeAdapter;
    if (name !== null) {
      for (const layer of layers) {
        const adapter = layer.adapters.get(name);
        if (adapter && !layer.mergedAdapters.includes(name)) variables.push(adapter.a, adapter.b);
      }
    }
    return checkpointed(body, x, constants, variables);
  }

  /** Every linear layer in module order (each one an adapter can target). */
  linearLayers(): readonly LoraLinear[] {
    return this.linears;
  }

  /** Base parameters under their canonical `*ForCausalLM` keys. */
  baseParameters(): readonly HfParameter[] {
    return this.parameters;
  }

  /** Variables the optimizer updates: the active adapter's A and B, or every weight in full mode. */
  trainableVariables(): tf.Variable[] {
    return [...this.namedTrainableVariables().values()];
  }

  /**
   * Trainable variables with stable names, for checkpoints. LoRA mode: `<module path>.lora_A`
   * ([in, r]) and `.lora_B` ([r, out]). Full mode: the Hugging Face key (tfjs layout).
   */
  namedTrainableVariables(): Map<string, tf.Variable> {
    const out = new Map<string, tf.Variable>();
    if (this.mode === 'full') {
      for (const p of this.parameters) out.set(p.key, p.tensor() as tf.Variable);
      return out;
    }
    if (this.disabled || this.active === null) return out;
    for (const layer of this.linears) {
      const adapter = layer.adapters.get(this.active);
      if (!adapter) continue;
      out.set(`${layer.path}.lora_A`, adapter.a);
      out.set(`${layer.path}.lora_B`, adapter.b);
    }
    return out;
  }

  // ---- adapters -------------------------------------------------------------------------

  get activeAdapter(): string | null {
    return this.active;
  }

  get adaptersDisabled(): boolean {
    return this.disabled;
  }

  adapterNames(): string[] {
    return [...this.adapterConfigs.keys()];
  }

  loraConfig(name: string): LoraConfig {
    const cfg = this.adapterConfigs.get(name);
    if (!cfg)
      throw new LoraConfigError(
        `no adapter named "${name}" (have: ${this.adapterNames().join(', ') || 'none'})`,
      );
    return cfg;
  }

  /** Layers that `cfg.targetModules` selects, PEFT's matching rules. */
  resolveTargets(cfg: LoraConfig): LoraLinear[] {
    const candidates =
      cfg.targetModules === 'all-linear'
        ? // PEFT's all-linear excludes the output layer.
          this.linears.filter((l) => l.path !== 'lm_head')
        : this.linears.filter((l) => moduleNameMatches(l.path, cfg.targetModules as string[]));
    const excluded = cfg.excludeModules ?? [];
    return candidates.filter((l) => !moduleNameMatches(l.path, excluded));
  }

  /**
   * Adds adapter `name`. With a seed: A ~ kaiming-uniform(a=√5) = U(−1/√in, 1/√in) and
   * B = 0, so the output is unchanged until B trains (PEFT's default init). With a map
   * (module path → A [in, r], B [r, out], tfjs layout) the given values are used, e.g. when
   * importing a PEFT adapter. The first adapter becomes active; later ones wait for
   * `setActiveAdapter` (as PEFT's `add_adapter`).
   */
  addAdapter(name: string, cfg: LoraConfig, init: number | AdapterWeightsInit): void {
    if (this.mode !== 'lora')
      throw new LoraConfigError('adapters need a model loaded in "lora" mode');
    if (name.length === 0 || /[\s.]/.test(name)) {
      throw new LoraConfigError(`adapter name "${name}" must be non-empty without dots or spaces`);
    }
    if (this.adapterConfigs.has(name))
      throw new LoraConfigError(`adapter "${name}" already exists`);
    validateLoraConfig(cfg);
    const targets = this.resolveTargets(cfg);
    if (targets.length === 0) {
      throw new LoraConfigError(
        `target modules ${JSON.stringify(cfg.targetModules)} match no linear layer (have: ${[...new Set(this.linears.map((l) => l.name))].join(', ')})`,
        'targetModules',
      );
    }
    if (typeof init !== 'number') {
      const missing = targets.filter((l) => !init.has(l.path)).map((l) => l.path);
      const extra = [...init.keys()].filter((p) => !targets.some((l) => l.path === p));
      if (missing.length > 0 || extra.length > 0) {
        throw new LoraConfigError(
          `adapter weights do not match target modules (missing: ${missing.join(', ') || 'none'}; not targeted: ${extra.join(', ') || 'none'})`,
          'targetModules',
        );
      }
    }
    const scaling = loraScaling(cfg);
    for (const layer of targets) {
      let aData: Float32Array;
      let bData: Float32Array;
      if (typeof init === 'number') {
        const rng = new SeededRandom(deriveSeed(init, layer.path));
        const bound = 1 / Math.sqrt(layer.inFeatures);
        aData = rng.uniform(layer.inFeatures * cfg.r, -bound, bound);
        bData = new Float32Array(cfg.r * layer.outFeatures);
      } else {
        ({ a: aData, b: bData } = init.get(layer.path)!);
      }
      const a = toVariable(tf.tensor2d(aData, [layer.inFeatures, cfg.r])); // [in, r]
      const b = toVariable(tf.tensor2d(bData, [cfg.r, layer.outFeatures])); // [r, out]
      layer.addAdapter(name, { r: cfg.r, scaling, dropout: cfg.dropout, a, b });
    }
    this.adapterConfigs.set(name, {
      ...cfg,
      // The layout is the architecture's, as PEFT forces it (Conv1D ⇒ fan_in_fan_out).
      fanInFanOut: this.config.modelType === 'gpt2',
      // Stored resolved, as PEFT does when it saves an all-linear config.
      targetModules:
        cfg.targetModules === 'all-linear'
          ? [...new Set(targets.map((l) => l.name))].sort()
          : [...cfg.targetModules],
    });
    if (this.active === null) this.active = name;
    this.refreshTrainableFlags();
  }

  /** Current adapter values per module path, tfjs layout (A [in, r], B [r, out]). */
  adapterWeights(
    name: string,
  ): Map<string, { a: Float32Array; b: Float32Array; inFeatures: number; outFeatures: number }> {
    const cfg = this.loraConfig(name);
    const out = new Map<
      string,
      { a: Float32Array; b: Float32Array; inFeatures: number; outFeatures: number }
    >();
    for (const layer of this.linears) {
      const adapter = layer.adapters.get(name);
      if (!adapter) continue;
      out.set(layer.path, {
        a: new Float32Array(adapter.a.dataSync()),
        b: new Float32Array(adapter.b.dataSync()),
        inFeatures: layer.inFeatures,
        outFeatures: layer.outFeatures,
      });
    }
    if (out.size === 0) throw new LoraConfigError(`adapter "${name}" (r=${cfg.r}) has no layers`);
    return out;
  }

  /** `adapterWeights()` with asynchronous reads, for backends without a synchronous one (webgpu). */
  async adapterWeightsAsync(
    name: string,
  ): Promise<
    Map<string, { a: Float32Array; b: Float32Array; inFeatures: number; outFeatures: number }>
  > {
    const cfg = this.loraConfig(name);
    const out = new Map<
      string,
      { a: Float32Array; b: Float32Array; inFeatures: number; outFeatures: number }
    >();
    for (const layer of this.linears) {
      const adapter = layer.adapters.get(name);
      if (!adapter) continue;
      out.set(layer.path, {
        a: new Float32Array(await adapter.a.data<'float32'>()), // [in, r]
        b: new Float32Array(await adapter.b.data<'float32'>()), // [r, out]
        inFeatures: layer.inFeatures,
        outFeatures: layer.outFeatures,
      });
    }
    if (out.size === 0) throw new LoraConfigError(`adapter "${name}" (r=${cfg.r}) has no layers`);
    return out;
  }

  /** Makes `name` the adapter used by forward and training. Unmerges first, like PEFT. */
  setActiveAdapter(name: string): void {
    this.loraConfig(name);
    if (this.active !== name) this.unmergeAll();
    this.active = name;
    this.disabled = false;
    this.refreshTrainableFlags();
  }

  /** Forward returns the base model's output until `enableAdapters`. Unmerges first. */
  disableAdapters(): void {
    this.unmergeAll();
    this.disabled = true;
    this.refreshTrainableFlags();
  }

  enableAdapters(): void {
    this.disabled = false;
    this.refreshTrainableFlags();
  }

  /** Folds scaling·A·B into the base weights (default: the active adapter). */
  mergeAdapter(name: string | null = this.active): void {
    if (name === null) throw new LoraConfigError('no adapter to merge');
    this.loraConfig(name);
    for (const layer of this.linears) if (layer.adapters.has(name)) layer.merge(name);
  }

  /** Subtracts every merged adapter again, restoring the base weights (up to rounding). */
  unmergeAdapter(): void {
    this.unmergeAll();
  }

  isMerged(name: string | null = this.active): boolean {
    return name !== null && this.linears.some((l) => l.mergedAdapters.includes(name));
  }

  deleteAdapter(name: string): void {
    this.loraConfig(name);
    for (const layer of this.linears) layer.deleteAdapter(name);
    this.adapterConfigs.delete(name);
    if (this.active === name) this.active = this.adapterConfigs.keys().next().value ?? null;
    this.refreshTrainableFlags();
  }

  dispose(): void {
    for (const tensor of this.standalone) tensor.dispose();
    for (const embedding of this.embeddings) embedding.dispose();
    for (const layer of this.linears) layer.dispose();
    this.adapterConfigs.clear();
  }

  // ---- construction helpers for subclasses ---------------------------------------------

  /** Creates a base parameter stored as-is (embeddings, norms, biases, Conv1D kernels). */
  protected createParameter(
    source: WeightSource,
    key: string,
    shape: number[],
    init: 'normal' | 'zeros' | 'ones',
  ): tf.Tensor {
    const tensor = this.toParameter(tf.tensor(source.read(key, shape, init), shape));
    this.parameters.push({
      key,
      hfShape: shape,
      transposed: false,
      host: false,
      blocks: 1,
      tensor: () => tensor,
      read: async () => new Float32Array((await tensor.data()) as Float32Array),
    });
    this.standalone.push(tensor);
    return tensor;
  }

  /** Creates the token embedding [V, C]: in host memory when `hostWeights`, else a tensor. */
  protected createEmbedding(
    source: WeightSource,
    key: string,
    shape: [number, number],
  ): TokenEmbedding {
    const data = source.read(key, shape, 'normal');
    const limit = this.deviceBlockLimit(key, shape);
    const embedding = new TokenEmbedding(
      key,
      this.hostWeights
        ? { host: new HostMatrix(shape[0], shape[1], data) }
        : limit !== null
          ? { blocks: RowBlockedMatrix.fromHost(key, data, shape[0], shape[1], limit) }
          : { tensor: this.toParameter(tf.tensor2d(data, shape)) as tf.Tensor2D },
    );
    this.parameters.push({
      key,
      hfShape: shape,
      transposed: false,
      host: embedding.host !== null,
      blocks: embedding.host ? 0 : (embedding.blocks?.blockCount ?? 1),
      tensor: () => {
        if (!embedding.tensor) throw notOneTensorError(key);
        return embedding.tensor;
      },
      read: () => embedding.hfData(),
    });
    this.embeddings.push(embedding);
    return embedding;
  }

  /** Creates a linear layer under `path` and registers its weight (and bias). */
  protected createLinear(
    source: WeightSource,
    path: string,
    inFeatures: number,
    outFeatures: number,
    layout: HfWeightLayout,
    hasBias: boolean,
  ): LoraLinear {
    const hfShape = layout === 'conv1d' ? [inFeatures, outFeatures] : [outFeatures, inFeatures];
    const stored = source.read(`${path}.weight`, hfShape, 'normal');
    const limit = this.deviceBlockLimit(`${path}.weight`, [outFeatures, inFeatures]);
    let weight: tf.Tensor2D | HostMatrix | RowBlockedMatrix;
    if (this.hostWeights) {
      // Kept as stored: the host kernels take either layout through sgemm's transpose flag.
      weight = new HostMatrix(hfShape[0], hfShape[1], stored);
    } else if (limit !== null) {
      // Blocks of output features: rows of nn.Linear's [out, in] (Conv1D's [in, out] transposed).
      const rows = layout === 'linear' ? stored : transpose2d(stored, inFeatures, outFeatures);
      weight = RowBlockedMatrix.fromHost(path, rows, outFeatures, inFeatures, limit);
    } else {
      // nn.Linear keeps [out, in]; tfjs multiplies x·W with W [in, out].
      const data = layout === 'conv1d' ? stored : transpose2d(stored, outFeatures, inFeatures);
      weight = this.toParameter(tf.tensor2d(data, [inFeatures, outFeatures])) as tf.Tensor2D;
    }
    const bias = hasBias
      ? (this.toParameter(
          tf.tensor1d(source.read(`${path}.bias`, [outFeatures], 'zeros')),
        ) as tf.Tensor1D)
      : null;
    const layer = new LoraLinear(path, inFeatures, outFeatures, layout, weight, bias);
    this.linears.push(layer);
    const key = `${path}.weight`;
    this.parameters.push({
      key,
      hfShape,
      transposed: layout === 'linear',
      host: layer.hostWeight !== null,
      blocks: layer.hostWeight ? 0 : (layer.blockWeight?.blockCount ?? 1),
      tensor: () => {
        if (!layer.weight) throw notOneTensorError(key);
        return layer.weight;
      },
      read: () => layer.hfWeightData(),
    });
    if (bias) {
      this.parameters.push({
        key: `${path}.bias`,
        hfShape: [outFeatures],
        transposed: false,
        host: false,
        blocks: 1,
        tensor: () => bias,
        read: async () => new Float32Array((await bias.data()) as Float32Array),
      });
    }
    return layer;
  }

  /**
   * The block size in bytes for a frozen matrix of `shape` that the device cannot bind whole
   * (webgpu past `maxStorageBufferBindingSize`), or null when it is kept as one tensor.
   */
  private deviceBlockLimit(key: string, shape: [number, number]): number | null {
    const limit = deviceBindingLimitBytes();
    if (!RowBlockedMatrix.needed(shape[0], shape[1], limit)) return null;
    if (this.mode === 'full') {
      // A trainable weight would need its gradient and optimizer state in blocks too.
      throw new Error(
        `${key} [${shape.join(', ')}] is larger than the ${limit} bytes this webgpu device can bind; ` +
          'full fine-tuning cannot split it (LoRA mode can)',
      );
    }
    return limit;
  }

  private toParameter(tensor: tf.Tensor): tf.Tensor {
    return this.mode === 'lora' ? tensor : toVariable(tensor);
  }

  private unmergeAll(): void {
    for (const layer of this.linears) {
      for (const name of [...layer.mergedAdapters].reverse()) layer.unmerge(name);
    }
  }

  /** Only the active adapter's variables take gradients from `tf.variableGrads`. */
  private refreshTrainableFlags(): void {
    for (const layer of this.linears) {
      for (const [name, adapter] of layer.adapters) {
        const trainable = !this.disabled && name === this.active;
        adapter.a.trainable = trainable;
        adapter.b.trainable = trainable;
      }
    }
  }
}

function notOneTensorError(key: string): Error {
  return new Error(
    `parameter "${key}" is not one tensor (host memory on a *-blas backend, or row blocks on ` +
      'webgpu past its binding limit); read it with read()',
  );
}

/** Wraps a fresh tensor in a trainable Variable and releases the temporary handle. */
function toVariable<R extends tf.Rank>(tensor: tf.Tensor<R>): tf.Variable<R> {
  const variable = tf.variable(tensor, true);
  tensor.dispose();
  return variable;
}

/**
 * Additive attention bias: 0 where query i may attend key j (j ≤ i and key j is not
 * padding), MASKED_SCORE elsewhere. Returns [B, 1, T, T] with a mask, [1, 1, T, T] without.
 */
export function buildAttentionBias(length: number, attentionMask?: tf.Tensor2D): tf.Tensor4D {
  return tf.tidy(() => {
    const causal = tf.linalg.bandPart(tf.ones([length, length]), -1, 0); // [T, T] lower triangle
    let allowed = tf.reshape(causal, [1, 1, length, length]); // [1, 1, T, T]
    if (attentionMask) {
      const keys = tf.reshape(tf.cast(attentionMask, 'float32'), [
        attentionMask.shape[0],
        1,
        1,
        length,
      ]); // [B, 1, 1, T]
      allowed = tf.mul(allowed, keys); // [B, 1, T, T]
    }
    return tf.mul<tf.Tensor4D>(tf.sub(1, allowed), MASKED_SCORE); // [B|1, 1, T, T]
  });
}

/** Thrown by weight sources when a tensor is missing or mis-shaped. */
export function weightShapeError(
  key: string,
  expected: number[],
  actual: number[],
): ModelWeightsError {
  return new ModelWeightsError(
    `tensor "${key}" has shape ${JSON.stringify(actual)}, expected ${JSON.stringify(expected)}`,
    key,
  );
}
