/**
 * Softmax cross-entropy over the vocabulary as two WGSL kernels for tfjs' webgpu backend
 * (issue 18). The fused LM head (models/head-loss.ts) scores a chunk of rows of logits
 * [n, V]; with tfjs ops that is a log-sum-exp, a gather of the targets' logits, an argmax, a
 * comparison and casts forward, and softmax, one-hot, a subtraction and two products backward:
 * about 15 dispatches a chunk, each a pass over [n, V]. Here each direction is one dispatch
 * with one workgroup per row, which reads the row from memory two (forward) or three
 * (backward) times and keeps the reductions in workgroup memory, as tfjs' own fused softmax
 * program does.
 *
 * - `LorafleetCrossEntropyRows`: logits [n, V], targets [n] int32 → [n, 2]: the row's NLL,
 *   logsumexp(l) − l[target], and 1 where argmax(l) = target (first maximum on ties, as
 *   tf.argMax) else 0.
 * - `LorafleetCrossEntropyGrad`: logits [n, V], targets [n] int32, scale [n] → [n, V]:
 *   (softmax(l) − onehot(target))·scale, the logits' gradient of Σ scale·NLL.
 * No gradients are registered: they run inside the head's custom gradient, which supplies it.
 */
import * as tf from '@tensorflow/tfjs';
import type { WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';

export const CROSS_ENTROPY_ROWS_KERNEL = 'LorafleetCrossEntropyRows';
export const CROSS_ENTROPY_GRAD_KERNEL = 'LorafleetCrossEntropyGrad';

/** What the kernels need of tfjs-webgpu's backend (4.22). */
interface WebgpuRunner {
  runWebGPUProgram(
    program: WebGPUProgram,
    inputs: tf.TensorInfo[],
    outputDtype: tf.DataType,
  ): tf.TensorInfo;
}

/** Invocations per row: wide rows (a vocabulary) use 256, as tfjs' softmax does. */
function workgroupSizeFor(cols: number): number {
  return cols >= 4096 ? 256 : 64;
}

/**
 * WGSL shared by both kernels: the row's maximum (and, for the forward kernel, the first
 * column holding it) and Σ exp(l − max), reduced in workgroup memory. `blockSize` is a power
 * of two; threads past the row's end contribute −∞-like and 0.
 */
function rowStatisticsWgsl(blockSize: number, withArgmax: boolean): string {
  return `
    var<workgroup> bufMax : array<f32, ${blockSize}>;
    var<workgroup> bufArg : array<i32, ${blockSize}>;
    var<workgroup> bufSum : array<f32, ${blockSize}>;
    var<workgroup> rowMax : f32;
    var<workgroup> rowArg : i32;
    var<workgroup> rowSum : f32;
    const blockSize = ${blockSize};

    fn rowStatistics(row : i32, tid : i32, cols : i32) {
      var threadMax = -3.402823e+38f;
      var threadArg = cols;
      for (var col = tid; col < cols; col += blockSize) {
        let value = getLogits(row, col);
        // Columns rise within a thread, so a strict > keeps the first maximum.
        if (value > threadMax) {
          threadMax = value;
          threadArg = col;
        }
      }
      bufMax[tid] = threadMax;
      bufArg[tid] = threadArg;
      workgroupBarrier();
      for (var size = blockSize >> 1; size > 0; size = size >> 1) {
        if (tid < size) {
          let otherMax = bufMax[tid + size];
          let otherArg = bufArg[tid + size];
          ${
            withArgmax
              ? 'if (otherMax > bufMax[tid] || (otherMax == bufMax[tid] && otherArg < bufArg[tid])) {'
              : 'if (otherMax > bufMax[tid]) {'
          }
            bufMax[tid] = otherMax;
            bufArg[tid] = otherArg;
          }
        }
        workgroupBarrier();
      }
      if (tid == 0) {
        rowMax = bufMax[0];
        rowArg = bufArg[0];
      }
      workgroupBarrier();

      var threadSum = 0.0;
      for (var col = tid; col < cols; col += blockSize) {
        threadSum += exp(getLogits(row, col) - rowMax);
      }
      bufSum[tid] = threadSum;
      workgroupBarrier();
      for (var size = blockSize >> 1; size > 0; size = size >> 1) {
        if (tid < size) {
          bufSum[tid] = bufSum[tid] + bufSum[tid + size];
        }
        workgroupBarrier();
      }
      if (tid == 0) {
        rowSum = bufSum[0];
      }
      workgroupBarrier();
    }
  `;
}

/** One workgroup per row of `rows` × `cols` logits. */
function rowProgram(
  kind: 'rows' | 'grad',
  rows: number,
  cols: number,
  variableNames: string[],
  body: (blockSize: number) => string,
): WebGPUProgram {
  const blockSize = workgroupSizeFor(cols);
  const outputShape = kind === 'rows' ? [rows, 2] : [rows, cols];
  return {
    variableNames,
    outputShape,
    shaderKey: `lorafleetCrossEntropy_${kind}_${blockSize}`,
    dispatchLayout: { x: [0, 1] },
    dispatch: [rows, 1, 1],
    workgroupSize: [blockSize, 1, 1],
    getUserCode: () => body(blockSize),
  };
}

function crossEntropyRowsProgram(rows: number, cols: number): WebGPUProgram {
  return rowProgram(
    'rows',
    rows,
    cols,
    ['logits', 'targets'],
    (blockSize) => `
    ${rowStatisticsWgsl(blockSize, true)}
    fn main(index : i32) {
      let row = index / blockSize;
      let tid = i32(localId.x);
      rowStatistics(row, tid, uniforms.logitsShape[1]);
      if (tid == 0) {
        let label = i32(getTargets(row));
        setOutputAtCoords(row, 0, log(rowSum) + rowMax - getLogits(row, label));
        setOutputAtCoords(row, 1, select(0.0, 1.0, rowArg == label));
      }
    }
  `,
  );
}

function crossEntropyGradProgram(rows: number, cols: number): WebGPUProgram {
  return rowProgram(
    'grad',
    rows,
    cols,
    ['logits', 'targets', 'scale'],
    (blockSize) => `
    ${rowStatisticsWgsl(blockSize, false)}
    fn main(index : i32) {
      let row = index / blockSize;
      let tid = i32(localId.x);
      let cols = uniforms.logitsShape[1];
      rowStatistics(row, tid, cols);
      let label = i32(getTargets(row));
      let scale = getScale(row);
      for (var col = tid; col < cols; col += blockSize) {
        let p = exp(getLogits(row, col) - rowMax) / rowSum;
        setOutputAtCoords(row, col, (p - select(0.0, 1.0, col == label)) * scale);
      }
    }
  `,
  );
}

/** Registers both kernels on `webgpu` (once the backend exists; idempotent). */
export function registerWebgpuCrossEntropyKernels(): void {
  if (!tf.getKernel(CROSS_ENTROPY_ROWS_KERNEL, 'webgpu')) {
    tf.registerKernel({
      kernelName: CROSS_ENTROPY_ROWS_KERNEL,
      backendName: 'webgpu',
      kernelFunc: ({ inputs, backend }) => {
        const { logits, targets } = inputs as { logits: tf.TensorInfo; targets: tf.TensorInfo };
        const [rows, cols] = logits.shape;
        return (backend as unknown as WebgpuRunner).runWebGPUProgram(
          crossEntropyRowsProgram(rows, cols),
          [logits, targets],
          'float32',
        );
      },
    });
  }
  if (!tf.getKernel(CROSS_ENTROPY_GRAD_KERNEL, 'webgpu')) {
    tf.registerKernel({
      kernelName: CROSS_ENTROPY_GRAD_KERNEL,
      backendName: 'webgpu',
      kernelFunc: ({ inputs, backend }) => {
        const { logits, targets, scale } = inputs as {
          logits: tf.TensorInfo;
          targets: tf.TensorInfo;
          scale: tf.TensorInfo;
        };
        const [rows, cols] = logits.shape;
        return (backend as unknown as WebgpuRunner).runWebGPUProgram(
          crossEntropyGradProgram(rows, cols),
          [logits, targets, scale],
          'float32',
        );
      },
    });
  }
}

/**
 * Whether the fused kernels serve the active backend. `LORAFLEET_WEBGPU_FUSED_CE=0` turns
 * them off (the comparison figure, and a way out should a driver miscompile them).
 */
export function fusedCrossEntropyActive(env: NodeJS.ProcessEnv = process.env): boolean {
  return (
    tf.getBackend() === 'webgpu' &&
    env.LORAFLEET_WEBGPU_FUSED_CE !== '0' &&
    tf.getKernel(CROSS_ENTROPY_ROWS_KERNEL, 'webgpu') !== undefined
  );
}

/** logits [n, V], targets [n] int32 → [n, 2]: per row NLL and [argmax = target]. */
export function crossEntropyRows(logits: tf.Tensor2D, targets: tf.Tensor1D): tf.Tensor2D {
  return tf.engine().runKernel<tf.Tensor2D>(CROSS_ENTROPY_ROWS_KERNEL, { logits, targets }); // [n, 2]
}

/** logits [n, V], targets [n] int32, scale [n] → (softmax − onehot)·scale [n, V]. */
export function crossEntropyGrad(
  logits: tf.Tensor2D,
  targets: tf.Tensor1D,
  scale: tf.Tensor1D,
): tf.Tensor2D {
  return tf.engine().runKernel<tf.Tensor2D>(CROSS_ENTROPY_GRAD_KERNEL, { logits, targets, scale }); // [n, V]
}
