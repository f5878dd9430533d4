/**
 * Frozen weights outside the wasm heap (issue 13). On `wasm-blas` and `cpu-blas` a LoRA
 * model keeps its frozen matrices (linear weights, the token embedding, an untied head) as
 * host `Float32Array`s in their Hugging Face layout, and these kernels compute with them by
 * OpenBLAS directly on that memory:
 *
 * - `LorafleetHostMatMul`: x [N, K] · op(W), op = identity or transpose. Its gradient is
 *   the same kernel with the other transpose (dx = dy · op(W)ᵀ); W gets none, it is frozen.
 * - `LorafleetHostGather`: rows of W for an index tensor (embedding lookup).
 * - `LorafleetHostHeadLoss`: the LM head and the completion-only cross-entropy fused over
 *   blocks of rows, so the [N, V] logits and their softmax never exist whole, and rows that
 *   are not scored (prompt tokens, padding) are never multiplied at all. In training it also
 *   returns the gradient to the hidden states, so backward recomputes nothing.
 *
 * The wasm heap (4 GiB at most) then holds only activations, LoRA parameters, gradients and
 * optimizer state; the weights can be as large as host memory allows.
 */
import * as tf from '@tensorflow/tfjs';
import { HEAD_BLOCK_FLOATS } from '@lorafleet/data';

import { blasKernelsActive } from './blas.kernels';
import { runHostKernel, type HostKernelBackend } from './host-kernel.util';
import { loadOpenBlas, type Sgemm } from './openblas';

export const HOST_MATMUL_KERNEL = 'LorafleetHostMatMul';
export const HOST_GATHER_KERNEL = 'LorafleetHostGather';
export const HOST_HEAD_LOSS_KERNEL = 'LorafleetHostHeadLoss';

/** A frozen row-major float32 matrix [rows, cols] in host memory (not a tfjs tensor). */
export class HostMatrix {
  constructor(
    readonly rows: number,
    readonly cols: number,
    readonly data: Float32Array,
  ) {
    if (data.length !== rows * cols) {
      throw new RangeError(`HostMatrix: ${data.length} values do not fill [${rows}, ${cols}]`);
    }
  }
}

// Logits computed at once by the fused head: [rows, V] ≤ HEAD_BLOCK_FLOATS floats. The constant
// lives beside the memory estimator in libs/data, which sizes the head's block with it.
export { HEAD_BLOCK_FLOATS };

/** Grow-only scratch buffers, reused across calls (kernels run one at a time). */
const scratch = new Map<string, Float32Array>();
function scratchArray(name: string, size: number): Float32Array {
  let buffer = scratch.get(name);
  if (!buffer || buffer.length < size) {
    buffer = new Float32Array(size);
    scratch.set(name, buffer);
  }
  return buffer.subarray(0, size);
}

type KernelArgs = Parameters<tf.KernelFunc>[0];

interface MatMulAttrs {
  matrix: HostMatrix;
  transposeMatrix: boolean;
}

function matMulKernel(backendName: HostKernelBackend, sgemm: Sgemm): tf.KernelFunc {
  return ({ inputs, backend, attrs }: KernelArgs) => {
    const { x } = inputs as { x: tf.TensorInfo };
    const { matrix, transposeMatrix } = attrs as unknown as MatMulAttrs;
    const [n, k] = x.shape;
    const inner = transposeMatrix ? matrix.cols : matrix.rows;
    const outCols = transposeMatrix ? matrix.rows : matrix.cols;
    if (x.shape.length !== 2 || k !== inner) {
      throw new Error(
        `${HOST_MATMUL_KERNEL}: x ${JSON.stringify(x.shape)} does not fit a [${matrix.rows}, ${matrix.cols}] weight` +
          `${transposeMatrix ? ' (transposed)' : ''}`,
      );
    }
    return runHostKernel(
      backendName,
      backend,
      [x],
      [{ shape: [n, outCols], dtype: 'float32' }],
      ([xs], [ys]) => {
        if (n === 0 || outCols === 0) return;
        if (k === 0) {
          ys.fill(0);
          return;
        }
        // y [N, out] = x [N, K] · op(W); W row-major [rows, cols] has leading dimension cols.
        sgemm(
          false,
          transposeMatrix,
          n,
          outCols,
          k,
          xs as Float32Array,
          k,
          matrix.data,
          matrix.cols,
          ys as Float32Array,
          outCols,
        );
      },
    )[0];
  };
}

function gatherKernel(backendName: HostKernelBackend): tf.KernelFunc {
  return ({ inputs, backend, attrs }: KernelArgs) => {
    const { indices } = inputs as { indices: tf.TensorInfo };
    const { matrix } = attrs as unknown as { matrix: HostMatrix };
    const width = matrix.cols;
    return runHostKernel(
      backendName,
      backend,
      [indices],
      [{ shape: [...indices.shape, width], dtype: 'float32' }],
      ([ids], [out]) => {
        for (let i = 0; i < ids.length; i++) {
          const row = ids[i];
          if (!(row >= 0 && row < matrix.rows)) {
            throw new RangeError(`token id ${row} is outside the embedding's ${matrix.rows} rows`);
          }
          out.set(matrix.data.subarray(row * width, (row + 1) * width), i * width);
        }
      },
    )[0];
  };
}

interface ScoredRows {
  /** Indices (into the N rows) of rows with a non-zero weight. */
  rows: Int32Array;
  /** [scored, C]: those rows of the hidden states, contiguous. */
  hidden: Float32Array;
}

/** Packs the scored rows of hidden [N, C]: only they reach the head (prompts are masked). */
function scoredRows(
  hidden: Float32Array,
  weights: Float32Array,
  width: number,
  name: string,
): ScoredRows {
  let count = 0;
  for (let i = 0; i < weights.length; i++) if (weights[i] !== 0) count++;
  const rows = new Int32Array(count);
  let j = 0;
  for (let i = 0; i < weights.length; i++) if (weights[i] !== 0) rows[j++] = i;
  if (count === weights.length) return { rows, hidden };
  const packed = scratchArray(name, count * width);
  for (let r = 0; r < count; r++)
    packed.set(hidden.subarray(rows[r] * width, (rows[r] + 1) * width), r * width);
  return { rows, hidden: packed };
}

/** Rows whose logits [rows, V] fit one block. */
function rowsPerBlock(vocab: number): number {
  return Math.max(1, Math.floor(HEAD_BLOCK_FLOATS / vocab));
}

interface HeadLossAttrs {
  matrix: HostMatrix;
  /** Also compute d(Σ w·NLL)/d hidden (training): one more product, no recomputation later. */
  withGradient: boolean;
}

/**
 * The fused head over blocks of scored rows: logits [rows, V] = h·Eᵀ, then per row the
 * log-sum-exp (one exp per logit), w·NLL and the argmax; in training the same block then
 * becomes w·(softmax − onehot) in place and is multiplied back by E into the rows' gradient.
 * The loss is linear in that gradient's scale, so backward is one multiply by dy: the head
 * costs two products per step, as unfused autodiff does, and never holds more than one
 * block of logits.
 */
function headLossKernel(backendName: HostKernelBackend, sgemm: Sgemm): tf.KernelFunc {
  return ({ inputs, backend, attrs }: KernelArgs) => {
    const { hidden, targets, weights } = inputs as Record<string, tf.TensorInfo>;
    const { matrix, withGradient } = attrs as unknown as HeadLossAttrs;
    const [n, width] = hidden.shape;
    const vocab = matrix.rows;
    if (matrix.cols !== width) {
      throw new Error(
        `${HOST_HEAD_LOSS_KERNEL}: hidden width ${width} ≠ head width ${matrix.cols}`,
      );
    }
    return runHostKernel(
      backendName,
      backend,
      [hidden, targets, weights],
      [
        { shape: [], dtype: 'float32' },
        { shape: [], dtype: 'float32' },
        { shape: withGradient ? [n, width] : [0], dtype: 'float32' },
      ],
      ([hs, ts, ws], [nllOut, correctOut, dHidden]) => {
        const w = ws as Float32Array;
        const { rows, hidden: packed } = scoredRows(hs as Float32Array, w, width, 'head-hidden');
        const scored = rows.length;
        const block = rowsPerBlock(vocab);
        const logits = scratchArray('head-logits', Math.min(block, Math.max(1, scored)) * vocab);
        const packedGrad = withGradient ? scratchArray('head-dhidden', scored * width) : null;
        const scales = new Float64Array(block);
        let nll = 0;
        let correct = 0;
        for (let r0 = 0; r0 < scored; r0 += block) {
          const count = Math.min(block, scored - r0);
          // logits [count, V] = h[r0:r0+count] [count, C] · Eᵀ
          sgemm(
            false,
            true,
            count,
            vocab,
            width,
            packed.subarray(r0 * width),
            width,
            matrix.data,
            width,
            logits,
            vocab,
          );
          for (let r = 0; r < count; r++) {
            const i = rows[r0 + r];
            const row = logits.subarray(r * vocab, (r + 1) * vocab);
            const target = ts[i];
            let max = -Infinity;
            let arg = -1;
            for (let j = 0; j < vocab; j++) {
              if (row[j] > max) {
                max = row[j];
                arg = j;
              }
            }
            const targetLogit = row[target];
            let sum = 0;
            for (let j = 0; j < vocab; j++) {
              const e = Math.exp(row[j] - max);
              row[j] = e;
              sum += e;
            }
            nll += w[i] * (max + Math.log(sum) - targetLogit);
            if (arg === target) correct += w[i];
            scales[r] = w[i] / sum;
          }
          if (packedGrad) {
            // dh = w·(softmax − onehot)·E = (w/Σ)·(e·E) − w·E[target]: one product of the
            // block's exponentials, then a per-row scale and one row of E, instead of a
            // pass over the vocabulary to normalise.
            const dh = packedGrad.subarray(r0 * width, (r0 + count) * width);
            sgemm(false, false, count, width, vocab, logits, vocab, matrix.data, width, dh, width);
            for (let r = 0; r < count; r++) {
              const i = rows[r0 + r];
              const row = dh.subarray(r * width, (r + 1) * width);
              const targetRow = matrix.data.subarray(ts[i] * width, (ts[i] + 1) * width);
              const scale = scales[r];
              for (let c = 0; c < width; c++) row[c] = scale * row[c] - w[i] * targetRow[c];
            }
          }
        }
        nllOut[0] = nll;
        correctOut[0] = correct;
        if (packedGrad) {
          dHidden.fill(0);
          for (let r = 0; r < scored; r++) {
            dHidden.set(packedGrad.subarray(r * width, (r + 1) * width), rows[r] * width);
          }
        }
      },
    );
  };
}

const installedOn = new Set<HostKernelBackend>();

/**
 * Registers the host-weight kernels (and their gradients) for `backendName`. Loads OpenBLAS;
 * throws BackendError when it is missing.
 */
export function installHostWeightKernels(backendName: HostKernelBackend): void {
  if (installedOn.has(backendName)) return;
  const { sgemm } = loadOpenBlas();
  tf.registerKernel({
    kernelName: HOST_MATMUL_KERNEL,
    backendName,
    kernelFunc: matMulKernel(backendName, sgemm),
  });
  tf.registerKernel({
    kernelName: HOST_GATHER_KERNEL,
    backendName,
    kernelFunc: gatherKernel(backendName),
  });
  tf.registerKernel({
    kernelName: HOST_HEAD_LOSS_KERNEL,
    backendName,
    kernelFunc: headLossKernel(backendName, sgemm),
  });
  if (installedOn.size === 0) registerGradients();
  installedOn.add(backendName);
}

function registerGradients(): void {
  tf.registerGradient({
    kernelName: HOST_MATMUL_KERNEL,
    gradFunc: (dy, _saved, attrs) => {
      const { matrix, transposeMatrix } = attrs as unknown as MatMulAttrs;
      // dx = dy · op(W)ᵀ; the weight is frozen and gets no gradient.
      return { x: () => hostMatMul(dy as tf.Tensor2D, matrix, !transposeMatrix) };
    },
  });
  tf.registerGradient({
    kernelName: HOST_HEAD_LOSS_KERNEL,
    outputsToSave: [false, false, true],
    gradFunc: (dys, saved, attrs) => {
      const [dHidden] = saved; // [N, C]: d(Σ w·NLL)/d hidden, computed in the forward kernel
      const dy = (dys as Array<tf.Tensor | null>)[0];
      if ((attrs as unknown as HeadLossAttrs).withGradient !== true) {
        throw new Error(
          `${HOST_HEAD_LOSS_KERNEL}: backward through a head loss computed without gradient`,
        );
      }
      return { hidden: () => (dy === null ? tf.zerosLike(dHidden) : tf.mul(dHidden, dy)) };
    },
  });
}

/**
 * Whether models built now keep frozen weights in host memory: on `wasm-blas` and `cpu-blas`
 * (OpenBLAS kernels on), unless `LORAFLEET_HOST_WEIGHTS=0` (the benchmark's "before").
 */
export function hostWeightKernelsActive(): boolean {
  const name = tf.getBackend();
  return (
    (name === 'wasm' || name === 'cpu') &&
    installedOn.has(name) &&
    blasKernelsActive(name) &&
    process.env.LORAFLEET_HOST_WEIGHTS !== '0'
  );
}

/** x [N, K] · op(W) → [N, out], W frozen in host memory. */
export function hostMatMul(
  x: tf.Tensor2D,
  matrix: HostMatrix,
  transposeMatrix: boolean,
): tf.Tensor2D {
  const attrs = { matrix, transposeMatrix } as unknown as tf.NamedAttrMap;
  return tf.engine().runKernel<tf.Tensor2D>(HOST_MATMUL_KERNEL, { x }, attrs);
}

/** Rows of W for `indices` [...] int32 → [..., cols]. */
export function hostGather<R extends tf.Rank>(
  indices: tf.Tensor,
  matrix: HostMatrix,
): tf.Tensor<R> {
  const attrs = { matrix } as unknown as tf.NamedAttrMap;
  return tf.engine().runKernel<tf.Tensor<R>>(HOST_GATHER_KERNEL, { indices }, attrs);
}

/**
 * Fused LM head + weighted token NLL: hidden [N, C], head E [V, C] (logits = h·Eᵀ),
 * targets/weights [N]. Returns Σ w·NLL and Σ w·[argmax = target], both scalars; only the
 * first has a gradient (to hidden), and only with `withGradient` (training).
 */
export function hostHeadLoss(
  hidden: tf.Tensor2D,
  matrix: HostMatrix,
  targets: tf.Tensor1D,
  weights: tf.Tensor1D,
  withGradient: boolean,
): { nll: tf.Scalar; correct: tf.Scalar } {
  const attrs = { matrix, withGradient } as unknown as tf.NamedAttrMap;
  const [nll, correct] = tf
    .engine()
    .runKernel<tf.Tensor[]>(HOST_HEAD_LOSS_KERNEL, { hidden, targets, weights }, attrs);
  return { nll: nll as tf.Scalar, correct: correct as tf.Scalar };
}
