/**
 * GPT-2 (Radford et al. 2019), matching transformers' `GPT2LMHeadModel`
 * (transformers v4.46 `models/gpt2/modeling_gpt2.py`): learned positions, pre-LayerNorm
 * blocks, a fused `c_attn` Conv1D producing q, k and v, gelu_new MLP, and an `lm_head`
 * tied to the token embedding.
 *
 * Conv1D stores its weight [in, out], which is already the tfjs kernel layout, so GPT-2
 * weights load without a transpose (and PEFT marks these layers `fan_in_fan_out`).
 */
import * as tf from '@tensorflow/tfjs';

// Products that stay on the wasm backend's fast MatMul path (added for the trainer, issue 4).
import { CausalLM, type ParameterMode, type WeightSource } from './causal-lm.model';
import type { LoraForwardContext, LoraLinear } from './lora-linear.layer';
import type { Gpt2Config } from './model.config';
import {
  activation,
  addSameShape,
  attention,
  layerNorm,
  mergeHeads,
  perPosition,
  splitHeads,
} from './nn.ops';
import type { TokenEmbedding } from './token-embedding';

interface Gpt2Block {
  ln1: { gamma: tf.Tensor; beta: tf.Tensor };
  cAttn: LoraLinear; // [C] → [3C]
  attnProj: LoraLinear; // [C] → [C]
  ln2: { gamma: tf.Tensor; beta: tf.Tensor };
  cFc: LoraLinear; // [C] → [inner]
  mlpProj: LoraLinear; // [inner] → [C]
}

export class Gpt2Model extends CausalLM {
  readonly config: Gpt2Config;
  private readonly wte: TokenEmbedding; // [V, C]
  private readonly wpe: tf.Tensor2D; // [P, C]
  private readonly blocks: Gpt2Block[] = [];
  private readonly lnF: { gamma: tf.Tensor; beta: tf.Tensor };
  private readonly lmHead: LoraLinear | null; // only when lm_head is untied

  constructor(config: Gpt2Config, source: WeightSource, mode: ParameterMode) {
    super(mode);
    this.config = config;
    const { vocabSize: V, hiddenSize: C, maxPositions: P, innerSize } = config;
    this.wte = this.createEmbedding(source, 'transformer.wte.weight', [V, C]);
    this.wpe = this.createParameter(
      source,
      'transformer.wpe.weight',
      [P, C],
      'normal',
    ) as tf.Tensor2D;
    const norm = (key: string) => ({
      gamma: this.createParameter(source, `${key}.weight`, [C], 'ones'),
      beta: this.createParameter(source, `${key}.bias`, [C], 'zeros'),
    });
    for (let i = 0; i < config.numLayers; i++) {
      const p = `transformer.h.${i}`;
      this.blocks.push({
        ln1: norm(`${p}.ln_1`),
        cAttn: this.createLinear(source, `${p}.attn.c_attn`, C, 3 * C, 'conv1d', true),
        attnProj: this.createLinear(source, `${p}.attn.c_proj`, C, C, 'conv1d', true),
        ln2: norm(`${p}.ln_2`),
        cFc: this.createLinear(source, `${p}.mlp.c_fc`, C, innerSize, 'conv1d', true),
        mlpProj: this.createLinear(source, `${p}.mlp.c_proj`, innerSize, C, 'conv1d', true),
      });
    }
    this.lnF = norm('transformer.ln_f');
    this.lmHead = config.tieWordEmbeddings
      ? null
      : this.createLinear(source, 'lm_head', C, V, 'linear', false);
  }

  protected get embedding(): TokenEmbedding {
    return this.wte;
  }

  protected get lmHeadLayer(): LoraLinear | null {
    return this.lmHead;
  }

  protected hiddenImpl(
    inputIds: tf.Tensor2D,
    attentionBias: tf.Tensor4D,
    ctx: LoraForwardContext,
  ): tf.Tensor2D {
    const { hiddenSize: C, layerNormEpsilon: eps } = this.config;
    const [batch, length] = inputIds.shape;
    if (length > this.config.maxPositions) {
      throw new Error(
        `gpt2: sequence length ${length} exceeds n_positions ${this.config.maxPositions}`,
      );
    }
    const positions = tf.range(0, length, 1, 'int32'); // [T]
    let x = tf.add<tf.Tensor3D>(this.wte.lookup(inputIds), tf.gather(this.wpe, positions)); // [B, T, C]

    this.blocks.forEach((block, layerIndex) => {
      const linears = [block.cAttn, block.attnProj, block.cFc, block.mlpProj];
      x = this.runBlock(x, ctx, linears, [attentionBias], (xIn, [bias]) =>
        this.block(xIn, block, layerIndex, bias as tf.Tensor4D, ctx),
      ); // [B, T, C]
    });

    const final = layerNorm(x, this.lnF.gamma, this.lnF.beta, eps); // [B, T, C]
    return tf.reshape<tf.Rank.R2>(final, [batch * length, C]); // [B·T, C]
  }

  /** One pre-LayerNorm transformer block: x + attn(ln_1(x)), then + mlp(ln_2(·)). */
  private block(
    xIn: tf.Tensor3D, // [B, T, C]
    block: Gpt2Block,
    layerIndex: number,
    attentionBias: tf.Tensor4D,
    ctx: LoraForwardContext,
  ): tf.Tensor3D {
    const { hiddenSize: C, numHeads: H, layerNormEpsilon: eps } = this.config;
    const headDim = C / H;
    let x = xIn;
    const h = layerNorm(x, block.ln1.gamma, block.ln1.beta, eps); // [B, T, C]
    const qkv = perPosition(h, (t) => block.cAttn.apply(t, ctx)); // [B, T, 3C]
    const [q, k, v] = tf.split(qkv, 3, -1) as [tf.Tensor3D, tf.Tensor3D, tf.Tensor3D]; // 3 × [B, T, C]
    let scale = this.config.scaleAttnWeights ? 1 / Math.sqrt(headDim) : 1;
    if (this.config.scaleAttnByInverseLayerIdx) scale /= layerIndex + 1;
    const qh = splitHeads(q, H, headDim); // [B, H, T, D]
    const kh = splitHeads(k, H, headDim); // [B, H, T, D]
    const vh = splitHeads(v, H, headDim); // [B, H, T, D]
    const attended = attention(qh, kh, vh, attentionBias, scale, 1); // [B, H, T, D]
    const y = perPosition(mergeHeads(attended), (t) => block.attnProj.apply(t, ctx)); // [B, T, C]
    x = addSameShape(x, y); // [B, T, C]

    const h2 = layerNorm(x, block.ln2.gamma, block.ln2.beta, eps); // [B, T, C]
    const mlp = perPosition(h2, (t) => {
      const up = activation(block.cFc.apply(t, ctx), this.config.activation) as tf.Tensor2D; // [B·T, inner]
      return block.mlpProj.apply(up, ctx); // [B·T, C]
    }); // [B, T, C]
    return addSameShape(x, mlp); // [B, T, C]
  }
}
