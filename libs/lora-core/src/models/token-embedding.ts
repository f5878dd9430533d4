/**
 * The token embedding E [V, C], which a tied LM head reuses as its weight (logits = h·Eᵀ).
 * It is the largest matrix of a small model (GPT-2: 38.6M of 124M parameters; Qwen2.5-0.5B:
 * 136M of 494M), so on the `*-blas` backends it stays in host memory and is read by the
 * host-weight kernels; on webgpu, when it exceeds the buffer the device can bind, it is kept
 * as row blocks (models/row-blocked.matrix.ts); elsewhere it is an ordinary tensor.
 */
import * as tf from '@tensorflow/tfjs';

import { HostMatrix, hostGather, hostMatMul } from '../backend/host-weight.kernels';
import { tiedHeadMatMul } from '../backend/matmul.ops';
import { RowBlockedMatrix } from './row-blocked.matrix';

/** Where E lives: exactly one of the three. */
export type EmbeddingStorage =
  /** [V, C] tensor (a Variable in full fine-tuning). */
  | { tensor: tf.Tensor2D; host?: never; blocks?: never }
  /** In host memory (`*-blas` backends). */
  | { host: HostMatrix; tensor?: never; blocks?: never }
  /** Row blocks, each within the device's binding limit (webgpu). */
  | { blocks: RowBlockedMatrix; tensor?: never; host?: never };

export class TokenEmbedding {
  readonly tensor: tf.Tensor2D | null;
  readonly host: HostMatrix | null;
  readonly blocks: RowBlockedMatrix | null;

  constructor(
    /** Canonical Hugging Face key, e.g. `model.embed_tokens.weight`. */
    readonly key: string,
    storage: EmbeddingStorage,
  ) {
    this.tensor = storage.tensor ?? null;
    this.host = storage.host ?? null;
    this.blocks = storage.blocks ?? null;
  }

  get vocabSize(): number {
    if (this.host) return this.host.rows;
    return this.blocks ? this.blocks.rows : this.tensor!.shape[0];
  }

  /** ids [B, T] int32 → [B, T, C]. */
  lookup(ids: tf.Tensor2D): tf.Tensor3D {
    if (this.host) return hostGather<tf.Rank.R3>(ids, this.host); // [B, T, C]
    if (this.blocks) return this.blocks.gather(ids); // [B, T, C]
    return tf.gather(this.tensor!, ids) as unknown as tf.Tensor3D; // [B, T, C]
  }

  /** x [N, C] → logits [N, V] = x·Eᵀ (a tied head). */
  logits(x: tf.Tensor2D): tf.Tensor2D {
    if (this.host) return hostMatMul(x, this.host, true); // [N, V]
    if (this.blocks) return this.blocks.timesTransposed(x); // [N, V]
    return tiedHeadMatMul(x, this.tensor!); // [N, V]
  }

  /** g [N, V] → g·E [N, C]: a tied head's gradient back to the hidden states. */
  backToHidden(g: tf.Tensor2D): tf.Tensor2D {
    if (this.blocks) return this.blocks.times(g); // [N, C]
    return tf.matMul(g, this.tensor!); // [N, C]
  }

  /** Hugging Face layout [V, C] (a copy). */
  async hfData(): Promise<Float32Array> {
    if (this.host) return new Float32Array(this.host.data);
    if (this.blocks) return this.blocks.data();
    return new Float32Array((await this.tensor!.data()) as Float32Array);
  }

  dispose(): void {
    this.tensor?.dispose();
    this.blocks?.dispose();
  }
}
