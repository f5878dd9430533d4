/**
 * The rotary decoder: Llama (Touvron et al. 2023) as transformers' `LlamaForCausalLM`
 * (transformers v4.46 `models/llama/modeling_llama.py`), and the families built like it,
 * each a set of named options of the one block (model.config.ts `DecoderConfig`):
 *
 * - Mistral (`modeling_mistral.py`): Llama without biases, an explicit `head_dim` when given,
 *   `sliding_window` (sequences up to the window are exact, longer ones refused).
 * - Qwen2/Qwen2.5 (`modeling_qwen2.py`): biases on q/k/v only (`qkvBias`).
 * - Qwen3 (`modeling_qwen3.py`): per-head RMSNorm of q and k before RoPE (`qkNorm`),
 *   an explicit `head_dim`, optional `attention_bias`.
 * - Phi-3 (`modeling_phi3.py`): fused `qkv_proj` (q, k, v rows) and `gate_up_proj` (gate,
 *   up rows) (`fusedProjections`); LoRA targets the fused layers by those names, as PEFT.
 * - Gemma 2 (`modeling_gemma2.py`): RMSNorm by (1 + w) (`normOffset`), embeddings × √C
 *   (`embeddingScale`), GeGLU with tanh-GELU (`mlpActivation`), sandwich norms around
 *   attention and MLP (`sandwichNorms`), `query_pre_attn_scalar`^−½ (`attentionScale`),
 *   soft-capped attention scores and final logits, a tied head.
 *
 * RMSNorm, rotary position embeddings in the rotate-half convention, SwiGLU MLP,
 * grouped-query attention, and an `lm_head` untied unless `tie_word_embeddings` says so.
 * Every projection is an nn.Linear stored [out, in]; it is transposed on load to the tfjs
 * kernel layout [in, out].
 */
import * as tf from '@tensorflow/tfjs';

// Products that stay on the wasm backend's fast MatMul path (added for the trainer, issue 4).
import { CausalLM, type ParameterMode, type WeightSource } from './causal-lm.model';
import type { LoraForwardContext, LoraLinear } from './lora-linear.layer';
import type { DecoderConfig, LlamaConfig } from './model.config';
import { ModelConfigError } from './model.errors';
import {
  addSameShape,
  applyRotary,
  attention,
  geluTanh,
  mergeHeads,
  perPosition,
  rmsNorm,
  splitHeads,
  swiglu,
} from './nn.ops';
import type { TokenEmbedding } from './token-embedding';

/** q, k and v projections: three layers, or Phi-3's one `qkv_proj` [C] → [(H + 2·KV)·D]. */
type QkvProjection =
  | { kind: 'split'; q: LoraLinear; k: LoraLinear; v: LoraLinear } // [C] → [H·D], [KV·D], [KV·D]
  | { kind: 'fused'; qkv: LoraLinear };

/** Gate and up projections: two layers, or Phi-3's one `gate_up_proj` [C] → [2·I]. */
type GateUpProjection =
  | { kind: 'split'; gate: LoraLinear; up: LoraLinear } // [C] → [I] each
  | { kind: 'fused'; gateUp: LoraLinear };

interface DecoderLayer {
  inputNorm: tf.Tensor; // [C]
  qkv: QkvProjection;
  /** Qwen3's per-head norms of q and k, [D] each; null elsewhere. */
  qNorm: tf.Tensor | null;
  kNorm: tf.Tensor | null;
  oProj: LoraLinear; // [H·D] → [C]
  /** `post_attention_layernorm`: the MLP's input norm, or (sandwich) the attention output's. */
  postNorm: tf.Tensor; // [C]
  /** Gemma 2's `pre_feedforward_layernorm` and `post_feedforward_layernorm`; null elsewhere. */
  preFfNorm: tf.Tensor | null; // [C]
  postFfNorm: tf.Tensor | null; // [C]
  gateUp: GateUpProjection;
  downProj: LoraLinear; // [I] → [C]
  /** Every linear layer of the block, for gradient checkpointing. */
  linears: LoraLinear[];
}

/**
 * How one block reads past keys and values during incremental decoding: given this step's
 * k and v [1, KV, Tn, D], returns them with the cached past prepended, [1, KV, Tp+Tn, D].
 */
/** RoPE cos or sin: [T, D] shared by the batch, or [B, 1, T, D] per row. */
type RotaryTable = tf.Tensor2D | tf.Tensor4D;

export type KvExtender = (k: tf.Tensor4D, v: tf.Tensor4D) => { k: tf.Tensor4D; v: tf.Tensor4D };

/**
 * Rotary inverse frequencies θ^(−2i/D) (Su et al. 2021), adjusted for `rope_scaling` as
 * transformers' `modeling_rope_utils` does for the `linear` and `llama3` types.
 */
export function ropeInverseFrequencies(config: DecoderConfig): Float64Array {
  const { headDim: D, ropeTheta, ropeScaling } = config;
  const inv = new Float64Array(D / 2);
  for (let i = 0; i < D / 2; i++) inv[i] = 1 / ropeTheta ** ((2 * i) / D);
  if (ropeScaling?.type === 'linear') {
    for (let i = 0; i < inv.length; i++) inv[i] /= ropeScaling.factor;
  } else if (ropeScaling?.type === 'llama3') {
    const {
      factor,
      lowFreqFactor,
      highFreqFactor,
      originalMaxPositionEmbeddings: oldContext,
    } = ropeScaling;
    const lowFreqWavelen = oldContext / lowFreqFactor;
    const highFreqWavelen = oldContext / highFreqFactor;
    for (let i = 0; i < inv.length; i++) {
      const wavelen = (2 * Math.PI) / inv[i];
      if (wavelen > lowFreqWavelen) {
        inv[i] /= factor; // long wavelengths: interpolate fully
      } else if (wavelen >= highFreqWavelen) {
        // Medium band: blend between interpolated and original frequency.
        const smooth = (oldContext / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
        inv[i] = (1 - smooth) * (inv[i] / factor) + smooth * inv[i];
      }
    }
  }
  return inv;
}

export class LlamaModel extends CausalLM {
  readonly config: LlamaConfig;
  private readonly tokens: TokenEmbedding; // [V, C]
  private readonly layers: DecoderLayer[] = [];
  private readonly finalNorm: tf.Tensor; // [C]
  private readonly lmHead: LoraLinear | null; // null when tied to embed_tokens
  private readonly inverseFrequencies: Float64Array; // [D/2]

  constructor(config: DecoderConfig, source: WeightSource, mode: ParameterMode) {
    super(mode);
    this.config = config;
    const {
      vocabSize: V,
      hiddenSize: C,
      numHeads: H,
      numKeyValueHeads: KV,
      headDim: D,
      intermediateSize: I,
      qkvBias,
      oProjBias,
      mlpBias,
    } = config;
    this.tokens = this.createEmbedding(source, 'model.embed_tokens.weight', [V, C]);
    // Gemma's (1 + w) norms are neutral at w = 0, transformers' init for them.
    const normInit = config.normOffset === 1 ? 'zeros' : 'ones';
    const norm = (key: string) => this.createParameter(source, key, [C], normInit);
    for (let i = 0; i < config.numLayers; i++) {
      const p = `model.layers.${i}`;
      const linear = (name: string, inF: number, outF: number, bias: boolean) =>
        this.createLinear(source, `${p}.${name}`, inF, outF, 'linear', bias);
      // Created in the checkpoint's module order, which is also `linearModuleSpecs`' order.
      const inputNorm = norm(`${p}.input_layernorm.weight`);
      const qkv: QkvProjection = config.fusedProjections
        ? { kind: 'fused', qkv: linear('self_attn.qkv_proj', C, (H + 2 * KV) * D, qkvBias) }
        : {
            kind: 'split',
            q: linear('self_attn.q_proj', C, H * D, qkvBias),
            k: linear('self_attn.k_proj', C, KV * D, qkvBias),
            v: linear('self_attn.v_proj', C, KV * D, qkvBias),
          };
      const oProj = linear('self_attn.o_proj', H * D, C, oProjBias);
      const qNorm = config.qkNorm
        ? this.createParameter(source, `${p}.self_attn.q_norm.weight`, [D], 'ones')
        : null;
      const kNorm = config.qkNorm
        ? this.createParameter(source, `${p}.self_attn.k_norm.weight`, [D], 'ones')
        : null;
      const postNorm = norm(`${p}.post_attention_layernorm.weight`);
      const preFfNorm = config.sandwichNorms ? norm(`${p}.pre_feedforward_layernorm.weight`) : null;
      const postFfNorm = config.sandwichNorms
        ? norm(`${p}.post_feedforward_layernorm.weight`)
        : null;
      const gateUp: GateUpProjection = config.fusedProjections
        ? { kind: 'fused', gateUp: linear('mlp.gate_up_proj', C, 2 * I, mlpBias) }
        : {
            kind: 'split',
            gate: linear('mlp.gate_proj', C, I, mlpBias),
            up: linear('mlp.up_proj', C, I, mlpBias),
          };
      const downProj = linear('mlp.down_proj', I, C, mlpBias);
      const linears = [
        ...(qkv.kind === 'fused' ? [qkv.qkv] : [qkv.q, qkv.k, qkv.v]),
        oProj,
        ...(gateUp.kind === 'fused' ? [gateUp.gateUp] : [gateUp.gate, gateUp.up]),
        downProj,
      ];
      this.layers.push({
        inputNorm,
        qkv,
        qNorm,
        kNorm,
        oProj,
        postNorm,
        preFfNorm,
        postFfNorm,
        gateUp,
        downProj,
        linears,
      });
    }
    this.finalNorm = norm('model.norm.weight');
    this.lmHead = config.tieWordEmbeddings
      ? null
      : this.createLinear(source, 'lm_head', C, V, 'linear', false);
    this.inverseFrequencies = ropeInverseFrequencies(config);
  }

  /**
   * cos and sin tables [T, D] for positions offset..offset+T−1, in HF's layout: the D/2
   * frequencies repeated twice.
   */
  private rotaryTables(length: number, offset = 0): { cos: tf.Tensor2D; sin: tf.Tensor2D } {
    const D = this.config.headDim;
    const { cos, sin } = this.rotaryValues(Array.from({ length }, (_, r) => offset + r));
    return { cos: tf.tensor2d(cos, [length, D]), sin: tf.tensor2d(sin, [length, D]) };
  }

  /**
   * Per-row tables [B, 1, Tn, D] for decoding a batch whose rows sit at different positions
   * (`positions[b][t]`), broadcast over the heads by `applyRotary`.
   */
  private rowRotaryTables(positions: readonly (readonly number[])[]): {
    cos: tf.Tensor4D;
    sin: tf.Tensor4D;
  } {
    const shape: [number, number, number, number] = [
      positions.length,
      1,
      positions[0].length,
      this.config.headDim,
    ];
    const { cos, sin } = this.rotaryValues(positions.flat());
    return { cos: tf.tensor4d(cos, shape), sin: tf.tensor4d(sin, shape) };
  }

  /** cos and sin rows [positions.length · D] for the given positions. */
  private rotaryValues(positions: readonly number[]): { cos: Float32Array; sin: Float32Array } {
    const D = this.config.headDim;
    const half = D / 2;
    const cos = new Float32Array(positions.length * D);
    const sin = new Float32Array(positions.length * D);
    positions.forEach((t, r) => {
      for (let i = 0; i < half; i++) {
        const angle = t * this.inverseFrequencies[i];
        cos[r * D + i] = cos[r * D + i + half] = Math.cos(angle);
        sin[r * D + i] = sin[r * D + i + half] = Math.sin(angle);
      }
    });
    return { cos, sin };
  }

  /**
   * Sliding-window attention is not implemented as a mask: up to the window every key is
   * inside it (transformers lets query i see key j when i − j < window), so the plain causal
   * mask is exact; beyond it the model would attend where the original does not.
   */
  private checkWindow(totalLength: number): void {
    const window = this.config.slidingWindow;
    if (window !== null && totalLength > window) {
      throw new ModelConfigError(
        `${this.config.modelType}: a sequence of ${totalLength} tokens exceeds sliding_window ${window}; sliding-window attention beyond the window is not implemented`,
        'sliding_window',
      );
    }
  }

  protected get embedding(): TokenEmbedding {
    return this.tokens;
  }

  protected get lmHeadLayer(): LoraLinear | null {
    return this.lmHead;
  }

  protected override get finalLogitSoftcap(): number | null {
    return this.config.finalLogitSoftcap;
  }

  /** The family's RMSNorm: by w, or by (1 + w) for Gemma. */
  private norm(x: tf.Tensor3D, weight: tf.Tensor): tf.Tensor3D {
    return rmsNorm(x, weight, this.config.rmsNormEps, this.config.normOffset); // x's shape
  }

  /** ids [B, T] → embeddings [B, T, C], × √C for Gemma (its `normalizer`). */
  private embed(ids: tf.Tensor2D): tf.Tensor3D {
    const x = this.tokens.lookup(ids); // [B, T, C]
    const scale = this.config.embeddingScale;
    return scale === null ? x : tf.mul(x, scale); // [B, T, C]
  }

  protected hiddenImpl(
    inputIds: tf.Tensor2D,
    attentionBias: tf.Tensor4D,
    ctx: LoraForwardContext,
  ): tf.Tensor2D {
    const { hiddenSize: C } = this.config;
    const [batch, length] = inputIds.shape;
    this.checkWindow(length);
    const rotary = this.rotaryTables(length); // [T, D] each
    let x = this.embed(inputIds); // [B, T, C]
    for (const layer of this.layers) {
      x = this.runBlock(
        x,
        ctx,
        layer.linears,
        [rotary.cos, rotary.sin, attentionBias],
        (xIn, [cos, sin, bias]) =>
          this.decoderLayer(
            xIn,
            layer,
            { cos: cos as tf.Tensor2D, sin: sin as tf.Tensor2D },
            bias as tf.Tensor4D,
            ctx,
            null,
          ),
      ); // [B, T, C]
    }
    const final = this.norm(x, this.finalNorm); // [B, T, C]
    return tf.reshape<tf.Rank.R2>(final, [batch * length, C]); // [B·T, C]
  }

  /**
   * Incremental decoding (generation/kv-cache.decoder.ts, serving/batched-kv.decoder.ts)
   * through the same blocks: ids [B, Tn], `bias` [B|1, 1, Tn, Tk], and `cache(i)` block i's
   * key/value extender. `positions` is either the first new position shared by every row
   * (past..past+Tn−1) or each row's own positions [B][Tn] (a batch whose rows are at
   * different lengths). Returns the final-normed hidden state of each row's last position
   * [B, C].
   */
  decodeHidden(
    ids: tf.Tensor2D,
    positions: number | readonly (readonly number[])[],
    bias: tf.Tensor4D,
    ctx: LoraForwardContext,
    cache: (layerIndex: number) => KvExtender,
  ): tf.Tensor2D {
    const { hiddenSize: C } = this.config;
    const [batch, n] = ids.shape;
    this.checkWindow(
      typeof positions === 'number' ? positions + n : Math.max(...positions.flat()) + 1,
    );
    const rotary =
      typeof positions === 'number'
        ? this.rotaryTables(n, positions) // [Tn, D] each
        : this.rowRotaryTables(positions); // [B, 1, Tn, D] each
    let x = this.embed(ids); // [B, Tn, C]
    this.layers.forEach((layer, i) => {
      x = this.decoderLayer(x, layer, rotary, bias, ctx, cache(i)); // [B, Tn, C]
    });
    const last = tf.slice(x, [0, n - 1, 0], [batch, 1, C]); // [B, 1, C]
    return tf.reshape(this.norm(last, this.finalNorm), [batch, C]); // [B, C]
  }

  /** Block input [B, T, C] → q [B·T, H·D], k and v [B·T, KV·D] (before RoPE). */
  private projectQkv(
    h: tf.Tensor2D,
    qkv: QkvProjection,
    ctx: LoraForwardContext,
  ): [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D] {
    if (qkv.kind === 'split') {
      return [qkv.q.apply(h, ctx), qkv.k.apply(h, ctx), qkv.v.apply(h, ctx)];
    }
    const { numHeads: H, numKeyValueHeads: KV, headDim: D } = this.config;
    // Phi-3 `qkv_proj` rows are q, then k, then v (`modeling_phi3.py` slices them in order).
    return tf.split(qkv.qkv.apply(h, ctx), [H * D, KV * D, KV * D], 1) as [
      tf.Tensor2D,
      tf.Tensor2D,
      tf.Tensor2D,
    ]; // [B·T, H·D], [B·T, KV·D], [B·T, KV·D]
  }

  /** [B, T, heads·D] → [B, heads, T, D], with Qwen3's per-head RMSNorm (weight [D]) first. */
  private heads(x: tf.Tensor2D, batch: number, heads: number, norm: tf.Tensor | null): tf.Tensor4D {
    const { headDim: D, rmsNormEps: eps } = this.config;
    const length = x.shape[0] / batch;
    const perHead = tf.reshape<tf.Rank.R3>(x, [batch * length, heads, D]); // [B·T, heads, D]
    const normed = norm ? rmsNorm(perHead, norm, eps) : perHead; // [B·T, heads, D]
    return splitHeads(tf.reshape(normed, [batch, length, heads * D]), heads, D); // [B, heads, T, D]
  }

  /**
   * One decoder layer: x + attn(norm(x)), then + mlp(norm(·)). With `cache` (decoding), the
   * keys and values attended over are this step's with the cached past prepended.
   */
  private decoderLayer(
    xIn: tf.Tensor3D, // [B, T, C]
    layer: DecoderLayer,
    rotary: { cos: RotaryTable; sin: RotaryTable },
    attentionBias: tf.Tensor4D, // [B|1, 1, T, Tk]
    ctx: LoraForwardContext,
    cache: KvExtender | null,
  ): tf.Tensor3D {
    const { numHeads: H, numKeyValueHeads: KV, headDim: D } = this.config;
    const { attentionScale, attnLogitSoftcap, sandwichNorms, mlpActivation } = this.config;
    const [batch, length, width] = xIn.shape;
    const groups = H / KV; // query heads per key/value head
    const { cos, sin } = rotary;
    let x = xIn;
    const h = tf.reshape<tf.Rank.R2>(this.norm(x, layer.inputNorm), [batch * length, width]); // [B·T, C]
    const [qFlat, kFlat, vFlat] = this.projectQkv(h, layer.qkv, ctx); // [B·T, H·D], [B·T, KV·D] ×2
    const q = applyRotary(this.heads(qFlat, batch, H, layer.qNorm), cos, sin); // [B, H, T, D]
    const kNew = applyRotary(this.heads(kFlat, batch, KV, layer.kNorm), cos, sin); // [B, KV, T, D]
    const vNew = this.heads(vFlat, batch, KV, null); // [B, KV, T, D]
    const { k, v } = cache ? cache(kNew, vNew) : { k: kNew, v: vNew }; // [B, KV, Tk, D]
    // GQA without materialising repeated K/V: query head h = kv·groups + g uses kv head kv,
    // so folding the group axis into the time axis lets one batched matMul serve all groups.
    const qGrouped = tf.reshape<tf.Rank.R4>(q, [batch, KV, groups * length, D]); // [B, KV, G·T, D]
    const grouped = attention(
      qGrouped,
      k,
      v,
      attentionBias,
      attentionScale,
      groups,
      attnLogitSoftcap,
    ); // [B, KV, G·T, D]
    const attended = tf.reshape<tf.Rank.R4>(grouped, [batch, H, length, D]); // [B, H, T, D]
    const attnOut = perPosition(mergeHeads(attended), (t) => layer.oProj.apply(t, ctx)); // [B, T, C]
    // Sandwich (Gemma 2): the attention output is normalised before the residual add.
    x = addSameShape(x, sandwichNorms ? this.norm(attnOut, layer.postNorm) : attnOut); // [B, T, C]

    const h2 = this.norm(x, sandwichNorms ? layer.preFfNorm! : layer.postNorm); // [B, T, C]
    const mlp = perPosition(h2, (t) => {
      const [gate, up] =
        layer.gateUp.kind === 'split'
          ? [layer.gateUp.gate.apply(t, ctx), layer.gateUp.up.apply(t, ctx)] // [B·T, I] each
          : // Phi-3 `gate_up_proj` rows are gate, then up (`up_states.chunk(2, dim=-1)`).
            (tf.split(layer.gateUp.gateUp.apply(t, ctx), 2, 1) as [tf.Tensor2D, tf.Tensor2D]); // [B·T, I] each
      // SwiGLU silu(gate)·up, or Gemma's GeGLU gelu_tanh(gate)·up.
      const gated = mlpActivation === 'silu' ? swiglu(gate, up) : tf.mul<tf.Tensor2D>(geluTanh(gate), up); // [B·T, I]
      return layer.downProj.apply(gated, ctx); // [B·T, C]
    }); // [B, T, C]
    return addSameShape(x, sandwichNorms ? this.norm(mlp, layer.postFfNorm!) : mlp); // [B, T, C]
  }
}
