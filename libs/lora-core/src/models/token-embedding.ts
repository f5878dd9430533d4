/**
 * The token embedding E [V, C], which a tied LM head reuses as its weight (logits = h·Eᵀ).
 * It is the largest matrix of a small model (GPT-2: 38.6M of 124M parameters; Qwen2.5-0.5B:
 * 136M of 494M), so on the `*-blas` backends it stays in host memory and is read by the
 * host-weight kernels; elsewhere it is an ordinary tensor.
 */
import * as tf from '@tensorflow/tfjs';

import { HostMatrix, hostGather } from '../backend/host-weight.kernels';
import { tiedHeadMatMul } from '../backend/matmul.ops';
import { hostMatMul } from '../backend/host-weight.kernels';

export class TokenEmbedding {
  constructor(
    /** Canonical Hugging Face key, e.g. `model.embed_tokens.weight`. */
    readonly key: string,
    /** [V, C] tensor (a Variable in full fine-tuning), or null when `host` holds it. */
    readonly tensor: tf.Tensor2D | null,
    readonly host: HostMatrix | null,
  ) {
    if ((tensor === null) === (host === null))
      throw new Error('TokenEmbedding needs exactly one of tensor, host');
  }

  get vocabSize(): number {
    return this.host ? this.host.rows : this.tensor!.shape[0];
  }

  /** ids [B, T] int32 → [B, T, C]. */
  lookup(ids: tf.Tensor2D): tf.Tensor3D {
    if (this.host) return hostGather<tf.Rank.R3>(ids, this.host); // [B, T, C]
    return tf.gather(this.tensor!, ids) as unknown as tf.Tensor3D; // [B, T, C]
  }

  /** x [N, C] → logits [N, V] = x·Eᵀ (a tied head). */
  logits(x: tf.Tensor2D): tf.Tensor2D {
    if (this.host) return hostMatMul(x, this.host, true); // [N, V]
    return tiedHeadMatMul(x, this.tensor!); // [N, V]
  }

  /** Hugging Face layout [V, C] (a copy). */
  async hfData(): Promise<Float32Array> {
    if (this.host) return new Float32Array(this.host.data);
    return new Float32Array((await this.tensor!.data()) as Float32Array);
  }

  dispose(): void {
    this.tensor?.dispose();
  }
}
