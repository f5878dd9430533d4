/**
 * A frozen matrix M [R, K] kept as row blocks M_k [R_k, K], each small enough for the device
 * to bind (issue 18). tfjs binds a tensor as one storage buffer, and a webgpu adapter binds at
 * most `maxStorageBufferBindingSize` bytes (WebGPU's default is 128 MiB; gpt2-small's token
 * embedding is 154 MB), so a larger weight could never be read by any kernel. Blocks are
 * uploaded straight from the host array: the whole matrix never exists on the device.
 *
 * It holds the token embedding E [V, C] (rows = tokens) and frozen linear weights in nn.Linear
 * layout W [out, in] (rows = output features), the two places a weight grows with the
 * vocabulary or the MLP width. Every product here is exact block by block except `times`,
 * which sums the blocks' partial products (a different float32 summation order only).
 */
import * as tf from '@tensorflow/tfjs';

export class RowBlockedMatrix {
  private constructor(
    readonly rows: number,
    readonly cols: number,
    /** First row of each block. */
    private readonly starts: readonly number[],
    /** M_k [R_k, K]. */
    private blocks: tf.Tensor2D[],
  ) {}

  /** Whether a [rows, cols] float32 matrix exceeds `limitBytes` (so must be split). */
  static needed(rows: number, cols: number, limitBytes: number | null): boolean {
    return limitBytes !== null && rows * cols * 4 > limitBytes;
  }

  /**
   * The rows of `data` ([rows, cols] row-major) in blocks of at most `limitBytes` each. Throws
   * when one row alone is larger: nothing smaller than a row can be split off here.
   */
  static fromHost(
    what: string,
    data: Float32Array,
    rows: number,
    cols: number,
    limitBytes: number,
  ): RowBlockedMatrix {
    const rowsPerBlock = Math.floor(limitBytes / (cols * 4));
    if (rowsPerBlock < 1) {
      throw new Error(
        `${what}: one row of ${cols} floats (${cols * 4} bytes) exceeds the ${limitBytes}-byte buffer this device can bind`,
      );
    }
    const starts: number[] = [];
    const blocks: tf.Tensor2D[] = [];
    for (let start = 0; start < rows; start += rowsPerBlock) {
      const count = Math.min(rowsPerBlock, rows - start);
      starts.push(start);
      // subarray: a view, copied once into the tensor (and by the backend into its buffer).
      blocks.push(tf.tensor2d(data.subarray(start * cols, (start + count) * cols), [count, cols])); // [R_k, K]
    }
    return new RowBlockedMatrix(rows, cols, starts, blocks);
  }

  get blockCount(): number {
    return this.blocks.length;
  }

  /** Bytes of the largest block (what the device must bind at once). */
  get largestBlockBytes(): number {
    return Math.max(...this.blocks.map((b) => b.size * 4));
  }

  /**
   * ids [B, T] int32 → the rows they index, [B, T, K]. Each block gathers the ids that fall
   * in it (others clamped to row 0 and zeroed), and the blocks add up: every id lands in
   * exactly one block, so the sum is the row itself, exactly.
   */
  gather(ids: tf.Tensor2D): tf.Tensor3D {
    return tf.tidy(() => {
      let out: tf.Tensor3D | null = null;
      this.blocks.forEach((block, k) => {
        const local = tf.sub<tf.Tensor2D>(ids, tf.scalar(this.starts[k], 'int32')); // [B, T]
        const inside = tf.logicalAnd<tf.Tensor2D>(
          tf.greaterEqual(local, 0),
          tf.less(local, block.shape[0]),
        ); // [B, T] bool
        const picked = tf.gather(block, tf.where(inside, local, tf.zerosLike(local))); // [B, T, K]
        const part = tf.mul<tf.Tensor3D>(picked, tf.expandDims(tf.cast(inside, 'float32'), 2)); // [B, T, K]
        out = out === null ? part : tf.add<tf.Tensor3D>(out, part);
      });
      return out!;
    });
  }

  /** x [N, K] → x·Mᵀ [N, R]: each block's columns of the product, side by side. */
  timesTransposed(x: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() =>
      tf.concat<tf.Tensor2D>(
        this.blocks.map((block) => tf.matMul<tf.Tensor2D>(x, block, false, true)), // [N, R_k] each
        1,
      ),
    ); // [N, R]
  }

  /** g [N, R] → g·M [N, K] = Σ_k g[:, rows of k]·M_k. */
  times(g: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() =>
      tf.addN<tf.Tensor2D>(
        this.blocks.map((block, k) =>
          tf.matMul<tf.Tensor2D>(tf.slice(g, [0, this.starts[k]], [g.shape[0], block.shape[0]]), block),
        ), // [N, K] each
      ),
    ); // [N, K]
  }

  /** M ← M + sign·dᵀ for d [K, R] (an adapter's delta in tfjs layout [in, out]). */
  addTransposed(d: tf.Tensor2D, sign: 1 | -1): void {
    this.blocks = this.blocks.map((block, k) => {
      const next = tf.tidy(() => {
        const part = tf.transpose(tf.slice(d, [0, this.starts[k]], [this.cols, block.shape[0]])); // [R_k, K]
        return sign > 0 ? tf.add<tf.Tensor2D>(block, part) : tf.sub<tf.Tensor2D>(block, part);
      }); // [R_k, K]
      // Survive a caller's tidy: the new block outlives any scope merge() is called in.
      tf.keep(next);
      block.dispose();
      return next;
    });
  }

  /** M [R, K] row-major, a copy read block by block. */
  async data(): Promise<Float32Array> {
    const out = new Float32Array(this.rows * this.cols);
    for (let k = 0; k < this.blocks.length; k++) {
      out.set(await this.blocks[k].data<'float32'>(), this.starts[k] * this.cols);
    }
    return out;
  }

  dispose(): void {
    for (const block of this.blocks) block.dispose();
    this.blocks = [];
  }
}
