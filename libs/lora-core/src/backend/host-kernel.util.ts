/**
 * Kernel plumbing shared by the hand-written kernels of the `wasm` and `cpu` backends
 * (host-weight kernels, fused activations): reading inputs as typed arrays and allocating
 * outputs, on the wasm heap or in host Float32Arrays.
 */
import * as tf from '@tensorflow/tfjs';

export type HostKernelBackend = 'wasm' | 'cpu';

/** The parts of the wasm and cpu backends these kernels use (both are internal classes). */
interface WasmBackendLike {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(info: tf.TensorInfo): tf.TypedArray;
}
interface CpuBackendLike {
  data: { get(dataId: tf.DataId): { values?: unknown } };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: tf.TypedArray): tf.TensorInfo;
}

export interface OutputSpec {
  shape: number[];
  dtype: 'float32' | 'int32';
}

/**
 * Runs `body` on views of `inputs` and of freshly allocated outputs. On wasm every output is
 * allocated before any view is taken: growing the heap detaches the views taken before it.
 * The views are valid only during `body`.
 */
export function runHostKernel(
  backendName: HostKernelBackend,
  backend: unknown,
  inputs: readonly tf.TensorInfo[],
  outputs: readonly OutputSpec[],
  body: (ins: tf.TypedArray[], outs: tf.TypedArray[]) => void,
): tf.TensorInfo[] {
  if (backendName === 'wasm') {
    const wasm = backend as WasmBackendLike;
    const infos = outputs.map((o) => wasm.makeOutput(o.shape, o.dtype));
    body(
      inputs.map((i) => wasm.typedArrayFromHeap(i)),
      infos.map((i) => wasm.typedArrayFromHeap(i)),
    );
    return infos;
  }
  const cpu = backend as CpuBackendLike;
  const outs = outputs.map((o) => {
    const size = tf.util.sizeFromShape(o.shape);
    return o.dtype === 'int32' ? new Int32Array(size) : new Float32Array(size);
  });
  body(
    inputs.map((i) => cpu.data.get(i.dataId).values as tf.TypedArray),
    outs,
  );
  return outputs.map((o, k) => cpu.makeTensorInfo(o.shape, o.dtype, outs[k]));
}

/** Whether `backendName` is one of the two backends these kernels serve. */
export function isHostKernelBackend(backendName: string): backendName is HostKernelBackend {
  return backendName === 'wasm' || backendName === 'cpu';
}
