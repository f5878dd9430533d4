/**
 * `Slice` and `SplitV` for the tfjs `wasm` backend without the whole-input copy.
 *
 * tfjs-backend-wasm 4.22 slices in JavaScript and starts each slice with
 * `backend.readSync(x)`, which copies the entire input out of the wasm heap, however small
 * the slice; `SplitV` (the q/k/v split of a fused attention projection) slices once per part,
 * so it copies the input three times before copying the parts. Profiled on the reference
 * training step this made SplitV the second most expensive op after the matmuls. These
 * kernels copy the requested box straight from a heap view, in runs as long as the layout
 * allows. The bytes produced are identical.
 */
import * as tf from '@tensorflow/tfjs';

interface WasmBackendLike {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(info: tf.TensorInfo): tf.TypedArray;
}

/** Copies the box `begin`/`size` of `x` (shape `shape`, row-major) into `out`. */
export function copyBox(
  x: tf.TypedArray,
  shape: readonly number[],
  begin: readonly number[],
  size: readonly number[],
  out: tf.TypedArray,
): void {
  const rank = shape.length;
  // Trailing axes taken whole merge into one contiguous run with the axis before them.
  let inner = rank - 1;
  while (inner > 0 && begin[inner] === 0 && size[inner] === shape[inner]) inner--;
  const strides = new Array<number>(rank).fill(1);
  for (let axis = rank - 2; axis >= 0; axis--) strides[axis] = strides[axis + 1] * shape[axis + 1];
  let run = size[inner];
  for (let axis = inner + 1; axis < rank; axis++) run *= size[axis];
  const outer = size.slice(0, inner);
  const count = outer.reduce((p, v) => p * v, 1);
  const index = new Array<number>(inner).fill(0);
  let offset = 0;
  for (let axis = 0; axis <= inner; axis++) offset += begin[axis] * strides[axis];
  let written = 0;
  for (let n = 0; n < count; n++) {
    let source = offset;
    for (let axis = 0; axis < inner; axis++) source += index[axis] * strides[axis];
    out.set(x.subarray(source, source + run), written);
    written += run;
    // odometer over the outer axes
    for (let axis = inner - 1; axis >= 0; axis--) {
      if (++index[axis] < outer[axis]) break;
      index[axis] = 0;
    }
  }
}

function sliceFromHeap(
  backend: WasmBackendLike,
  x: tf.TensorInfo,
  begin: number[],
  size: number[],
): tf.TensorInfo {
  // Allocate first: growing the heap detaches views taken before it.
  const out = backend.makeOutput(size, x.dtype);
  if (size.some((extent) => extent === 0)) return out;
  copyBox(backend.typedArrayFromHeap(x), x.shape, begin, size, backend.typedArrayFromHeap(out));
  return out;
}

let installed = false;

/** Replaces the wasm backend's Slice and SplitV (once per process; stock kernels for strings). */
export function installWasmSliceKernels(): void {
  if (installed) return;
  const originalSlice = tf.getKernel('Slice', 'wasm');
  const originalSplit = tf.getKernel('SplitV', 'wasm');
  if (!originalSlice || !originalSplit) return; // nothing registered: leave tfjs as it is
  const slice: tf.KernelFunc = (args) => {
    const { x } = args.inputs as { x: tf.TensorInfo };
    if (x.dtype === 'string') return originalSlice.kernelFunc(args);
    const { begin, size } = args.attrs as { begin: number | number[]; size: number | number[] };
    const [begin_, size_] = tf.slice_util.parseSliceParams(x, begin, size);
    return sliceFromHeap(args.backend as unknown as WasmBackendLike, x, begin_, size_);
  };
  const splitV: tf.KernelFunc = (args) => {
    const { x } = args.inputs as { x: tf.TensorInfo };
    if (x.dtype === 'string') return originalSplit.kernelFunc(args);
    const { numOrSizeSplits, axis } = args.attrs as {
      numOrSizeSplits: number | number[];
      axis: number;
    };
    const splitAxis = tf.util.parseAxisParam(axis, x.shape)[0];
    const parts = tf.backend_util.prepareSplitSize(x, numOrSizeSplits, splitAxis);
    const begin = new Array<number>(x.shape.length).fill(0);
    return parts.map((part) => {
      const size = [...x.shape];
      size[splitAxis] = part;
      const out = sliceFromHeap(args.backend as unknown as WasmBackendLike, x, [...begin], size);
      begin[splitAxis] += part;
      return out;
    });
  };
  for (const [original, kernelFunc] of [
    [originalSlice, slice],
    [originalSplit, splitV],
  ] as const) {
    tf.unregisterKernel(original.kernelName, 'wasm');
    tf.registerKernel({ ...original, kernelFunc });
  }
  installed = true;
}
