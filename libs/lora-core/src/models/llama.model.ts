/**
 * Llama (Touvron et al. 2023), matching transformers' `LlamaForCausalLM`
 * (transformers v4.46 `models/llama/modeling_llama.py`): RMSNorm, rotary position
 * embeddings in the rotate-half convention, SwiGLU MLP, grouped-query attention, and an
 * `lm_head` that is untied unless `tie_word_embeddings` says otherwise.
 *
 * Every projection is an nn.Linear stored [out, in]; it is transposed on load to the tfjs
 * kernel layout [in, out].
 */
import * as tf from '@tensorflow/tfjs';

// Products that stay on the wasm backend's fast MatMul path (added for the trainer, issue 4).
import { CausalLM, type ParameterMode, type WeightSource } from './causal-lm.model';
import type { LoraForwardContext, LoraLinear } from './lora-linear.layer';
import type { LlamaConfig } from './model.config';
import {
  addSameShape,
  applyRotary,
  attention,
  mergeHeads,
  perPosition,
  rmsNorm,
  splitHeads,
  swiglu,
} from './nn.ops';
import type { TokenEmbedding } from './token-embedding';

interface LlamaLayer {
  inputNorm: tf.Tensor; // [C]
  qProj: LoraLinear; // [C] → [H·D]
  kProj: LoraLinear; // [C] → [KV·D]
  vProj: LoraLinear; // [C] → [KV·D]
  oProj: LoraLinear; // [H·D] → [C]
  postNorm: tf.Tensor; // [C]
  gateProj: LoraLinear; // [C] → [I]
  upProj: LoraLinear; // [C] → [I]
  downProj: LoraLinear; // [I] → [C]
}

/**
 * Rotary inverse frequencies θ^(−2i/D) (Su et al. 2021), adjusted for `rope_scaling` as
 * transformers' `modeling_rope_utils` does for the `linear` and `llama3` types.
 */
export function ropeInverseFrequencies(config: LlamaConfig): Float64Array {
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
  private readonly layers: LlamaLayer[] = [];
  private readonly finalNorm: tf.Tensor; // [C]
  private readonly lmHead: LoraLinear | null; // null when tied to embed_tokens
  private readonly inverseFrequencies: Float64Array; // [D/2]

  constructor(config: LlamaConfig, source: WeightSource, mode: ParameterMode) {
    super(mode);
    this.config = config;
    const {
      vocabSize: V,
      hiddenSize: C,
      numHeads: H,
      numKeyValueHeads: KV,
      headDim: D,
      intermediateSize: I,
    } = config;
    this.tokens = this.createEmbedding(source, 'model.embed_tokens.weight', [V, C]);
    for (let i = 0; i < config.numLayers; i++) {
      const p = `model.layers.${i}`;
      const attnBias = config.attentionBias;
      const mlpBias = config.mlpBias;
      this.layers.push({
        inputNorm: this.createParameter(source, `${p}.input_layernorm.weight`, [C], 'ones'),
        qProj: this.createLinear(source, `${p}.self_attn.q_proj`, C, H * D, 'linear', attnBias),
        kProj: this.createLinear(source, `${p}.self_attn.k_proj`, C, KV * D, 'linear', attnBias),
        vProj: this.createLinear(source, `${p}.self_attn.v_proj`, C, KV * D, 'linear', attnBias),
        oProj: this.createLinear(source, `${p}.self_attn.o_proj`, H * D, C, 'linear', attnBias),
        postNorm: this.createParameter(source, `${p}.post_attention_layernorm.weight`, [C], 'ones'),
        gateProj: this.createLinear(source, `${p}.mlp.gate_proj`, C, I, 'linear', mlpBias),
        upProj: this.createLinear(source, `${p}.mlp.up_proj`, C, I, 'linear', mlpBias),
        downProj: this.createLinear(source, `${p}.mlp.down_proj`, I, C, 'linear', mlpBias),
      });
    }
    this.finalNorm = this.createParameter(source, 'model.norm.weight', [C], 'ones');
    this.lmHead = config.tieWordEmbeddings
      ? null
      : this.createLinear(source, 'lm_head', C, V, 'linear', false);
    this.inverseFrequencies = ropeInverseFrequencies(config);
  }

  /** cos and sin tables [T, D] in HF's layout: the D/2 frequencies repeated twice. */
  private rotaryTables(length: number): { cos: tf.Tensor2D; sin: tf.Tensor2D } {
    const D = this.config.headDim;
    const half = D / 2;
    const cos = new Float32Array(length * D);
    const sin = new Float32Array(length * D);
    for (let t = 0; t < length; t++) {
      for (let i = 0; i < half; i++) {
        const angle = t * this.inverseFrequencies[i];
        cos[t * D + i] = cos[t * D + i + half] = Math.cos(angle);
        sin[t * D + i] = sin[t * D + i + half] = Math.sin(angle);
      }
    }
    return { cos: tf.tensor2d(cos, [length, D]), sin: tf.tensor2d(sin, [length, D]) };
  }

  protected get embedding(): TokenEmbedding {
    return this.tokens;
  }

  protected get lmHeadLayer(): LoraLinear | null {
    return this.lmHead;
  }

  protected hiddenImpl(
    inputIds: tf.Tensor2D,
    attentionBias: tf.Tensor4D,
    ctx: LoraForwardContext,
  ): tf.Tensor2D {
    const { hiddenSize: C, rmsNormEps: eps } = this.config;
    const [batch, length] = inputIds.shape;
    const rotary = this.rotaryTables(length); // [T, D] each
    let x = this.tokens.lookup(inputIds); // [B, T, C]
    for (const layer of this.layers) {
      const linears = [
        layer.qProj,
        layer.kProj,
        layer.vProj,
        layer.oProj,
        layer.gateProj,
        layer.upProj,
        layer.downProj,
      ];
      x = this.runBlock(
        x,
        ctx,
        linears,
        [rotary.cos, rotary.sin, attentionBias],
        (xIn, [cos, sin, bias]) =>
          this.decoderLayer(
            xIn,
            layer,
            { cos: cos as tf.Tensor2D, sin: sin as tf.Tensor2D },
            bias as tf.Tensor4D,
            ctx,
          ),
      ); // [B, T, C]
    }
    const final = rmsNorm(x, this.finalNorm, eps); // [B, T, C]
    return tf.reshape<tf.Rank.R2>(final, [batch * length, C]); // [B·T, C]
  }

  /** One decoder layer: x + attn(norm(x)), then + mlp(norm(·)). */
  private decoderLayer(
    xIn: tf.Tensor3D, // [B, T, C]
    layer: LlamaLayer,
    rotary: { cos: tf.Tensor2D; sin: tf.Tensor2D },
    attentionBias: tf.Tensor4D, // [B|1, 1, T, T]
    ctx: LoraForwardContext,
  ): tf.Tensor3D {
    const { numHeads: H, numKeyValueHeads: KV, headDim: D, rmsNormEps: eps } = this.config;
    const [batch, length] = xIn.shape;
    const groups = H / KV; // query heads per key/value head
    const { cos, sin } = rotary;
    let x = xIn;
    const h = rmsNorm(x, layer.inputNorm, eps); // [B, T, C]
    const q = applyRotary(
      splitHeads(
        perPosition(h, (t) => layer.qProj.apply(t, ctx)),
        H,
        D,
      ),
      cos,
      sin,
    ); // [B, H, T, D]
    const k = applyRotary(
      splitHeads(
        perPosition(h, (t) => layer.kProj.apply(t, ctx)),
        KV,
        D,
      ),
      cos,
      sin,
    ); // [B, KV, T, D]
    const v = splitHeads(
      perPosition(h, (t) => layer.vProj.apply(t, ctx)),
      KV,
      D,
    ); // [B, KV, T, D]
    // GQA without materialising repeated K/V: query head h = kv·groups + g uses kv head kv,
    // so folding the group axis into the time axis lets one batched matMul serve all groups.
    const qGrouped = tf.reshape<tf.Rank.R4>(q, [batch, KV, groups * length, D]); // [B, KV, G·T, D]
    const grouped = attention(qGrouped, k, v, attentionBias, 1 / Math.sqrt(D), groups); // [B, KV, G·T, D]
    const attended = tf.reshape<tf.Rank.R4>(grouped, [batch, H, length, D]); // [B, H, T, D]
    x = addSameShape(
      x,
      perPosition(mergeHeads(attended), (t) => layer.oProj.apply(t, ctx)),
    ); // [B, T, C]

    const h2 = rmsNorm(x, layer.postNorm, eps); // [B, T, C]
    const mlp = perPosition(h2, (t) => {
      const gate = layer.gateProj.apply(t, ctx); // [B·T, I]
      const up = layer.upProj.apply(t, ctx); // [B·T, I]
      return layer.downProj.apply(swiglu(gate, up), ctx); // [B·T, C]
    }); // [B, T, C]
    return addSameShape(x, mlp); // [B, T, C]
  }
}
