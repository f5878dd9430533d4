/**
 * `BatchMatMul` and `_FusedMatMul` on OpenBLAS for the tfjs `wasm` and `cpu` backends
 * (`LORAFLEET_BACKEND=wasm-blas` / `cpu-blas`, DESIGN §7).
 *
 * tfjs keeps kernels in a global registry keyed by (kernel, backend). We replace the two
 * matmul kernels of a backend with functions that call `cblas_sgemm` on the tensors' own
 * memory: the wasm heap for `wasm` (no copy in or out), the host Float32Arrays for `cpu`.
 * Every transpose form and batch layout the autodiff produces maps onto sgemm's
 * transpose flags and leading dimensions, so no transposed copy is ever made.
 *
 * The replacement is installed once per backend and then switched per process with
 * `setBlasKernels(backend, on)`: with it off (plain `wasm` or `cpu`) the original kernels
 * run, so a benchmark or test can compare both in one process. Layouts sgemm cannot express
 * (broadcasting both batch shapes at once, non-float32 inputs) also take the original.
 */
import * as tf from '@tensorflow/tfjs';

import { installHostWeightKernels } from './host-weight.kernels';
import { loadOpenBlas, type Sgemm } from './openblas';

export type BlasHostBackend = 'wasm' | 'cpu';

type KernelArgs = Parameters<tf.KernelFunc>[0];
type TensorInfo = tf.TensorInfo;

/** The parts of the wasm and cpu backends these kernels use (both are internal classes). */
interface WasmBackendLike {
  makeOutput(shape: number[], dtype: tf.DataType): TensorInfo;
  typedArrayFromHeap(info: TensorInfo): tf.TypedArray;
  disposeData(dataId: tf.DataId): boolean;
}
interface CpuBackendLike {
  data: { get(dataId: tf.DataId): { values?: unknown } };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: Float32Array): TensorInfo;
  disposeData(dataId: tf.DataId): boolean;
}

const enabled = new Set<BlasHostBackend>();
/** Products served by OpenBLAS so far in this process (tests and benchmarks read it). */
let gemmProducts = 0;
export function blasProductCount(): number {
  return gemmProducts;
}
const installed = new Map<BlasHostBackend, { batchMatMul: tf.KernelFunc; fused: tf.KernelFunc }>();

/** Whether MatMul on `backend` currently runs on OpenBLAS. */
export function blasKernelsActive(backend: string): boolean {
  return enabled.has(backend as BlasHostBackend);
}

function product(values: readonly number[]): number {
  return values.reduce((p, v) => p * v, 1);
}

interface GemmPlan {
  outShape: number[];
  m: number;
  n: number;
  k: number;
  /** Number of sgemm calls and the element stride of each operand between calls. */
  calls: number;
  strideA: number;
  strideB: number;
  /** Rows of op(A) per call (m, or batch·m when a batch of A folds into one product). */
  rows: number;
}

/**
 * a [...batchA, r1, c1] · b [...batchB, r2, c2] → sgemm calls, or null when the layout
 * needs a general broadcast (left to the original kernel).
 */
function planGemm(a: TensorInfo, b: TensorInfo, transA: boolean, transB: boolean): GemmPlan | null {
  if (a.dtype !== 'float32' || b.dtype !== 'float32') return null;
  const ra = a.shape.length;
  const rb = b.shape.length;
  if (ra < 2 || rb < 2) return null;
  const m = transA ? a.shape[ra - 1] : a.shape[ra - 2];
  const k = transA ? a.shape[ra - 2] : a.shape[ra - 1];
  const kb = transB ? b.shape[rb - 1] : b.shape[rb - 2];
  const n = transB ? b.shape[rb - 2] : b.shape[rb - 1];
  if (k !== kb) return null; // the original kernel raises tfjs's own shape error
  const batchShapeA = a.shape.slice(0, -2);
  const batchShapeB = b.shape.slice(0, -2);
  let batchShape: number[];
  try {
    batchShape = tf.backend_util.assertAndGetBroadcastShape(batchShapeA, batchShapeB);
  } catch {
    return null;
  }
  const batchA = product(batchShapeA);
  const batchB = product(batchShapeB);
  const batch = product(batchShape);
  const outShape = [...batchShape, m, n];
  if (batchB === 1 && !transA) {
    // [batch·m, k] · [k, n]: one product over the folded batch (rows are contiguous).
    return { outShape, m, n, k, calls: 1, strideA: 0, strideB: 0, rows: batchA * m };
  }
  if (batchA === batch && batchB === batch) {
    return { outShape, m, n, k, calls: batch, strideA: m * k, strideB: k * n, rows: m };
  }
  if (batchB === 1) return { outShape, m, n, k, calls: batch, strideA: m * k, strideB: 0, rows: m };
  if (batchA === 1) return { outShape, m, n, k, calls: batch, strideA: 0, strideB: k * n, rows: m };
  return null;
}

function runGemm(
  sgemm: Sgemm,
  plan: GemmPlan,
  transA: boolean,
  transB: boolean,
  aData: Float32Array,
  bData: Float32Array,
  out: Float32Array,
): void {
  const { m, n, k, rows } = plan;
  const lda = transA ? m : k;
  const ldb = transB ? k : n;
  const strideC = rows * n;
  for (let i = 0; i < plan.calls; i++) {
    const aOffset = i * plan.strideA;
    const bOffset = i * plan.strideB;
    sgemm(
      transA,
      transB,
      rows,
      n,
      k,
      plan.strideA ? aData.subarray(aOffset, aOffset + plan.strideA) : aData,
      lda,
      plan.strideB ? bData.subarray(bOffset, bOffset + plan.strideB) : bData,
      ldb,
      out.subarray(i * strideC, (i + 1) * strideC),
      n,
    );
  }
}

/** sgemm into a fresh output tensor of `backendName`, or null for an unsupported layout. */
function blasMatMul(
  sgemm: Sgemm,
  backendName: BlasHostBackend,
  backend: unknown,
  a: TensorInfo,
  b: TensorInfo,
  transA: boolean,
  transB: boolean,
): TensorInfo | null {
  const plan = planGemm(a, b, transA, transB);
  if (!plan) return null;
  gemmProducts++;
  const size = product(plan.outShape);
  if (backendName === 'wasm') {
    const wasm = backend as WasmBackendLike;
    // Allocate first: growing the heap detaches views taken before it.
    const out = wasm.makeOutput(plan.outShape, 'float32');
    if (size === 0 || plan.k === 0) {
      if (size) (wasm.typedArrayFromHeap(out) as Float32Array).fill(0);
      return out;
    }
    runGemm(
      sgemm,
      plan,
      transA,
      transB,
      wasm.typedArrayFromHeap(a) as Float32Array,
      wasm.typedArrayFromHeap(b) as Float32Array,
      wasm.typedArrayFromHeap(out) as Float32Array,
    );
    return out;
  }
  const cpu = backend as CpuBackendLike;
  const aValues = cpu.data.get(a.dataId).values;
  const bValues = cpu.data.get(b.dataId).values;
  if (!(aValues instanceof Float32Array) || !(bValues instanceof Float32Array)) return null;
  const out = new Float32Array(size);
  if (size && plan.k) runGemm(sgemm, plan, transA, transB, aValues, bValues, out);
  return cpu.makeTensorInfo(plan.outShape, 'float32', out);
}

/** Registry kernels used after the product in `_FusedMatMul` (bias, activation). */
function applyKernel(
  name: string,
  backendName: BlasHostBackend,
  backend: unknown,
  inputs: Record<string, TensorInfo>,
  attrs: Record<string, unknown> = {},
): TensorInfo {
  const kernel = tf.getKernel(name, backendName);
  if (!kernel) throw new Error(`kernel ${name} is not registered for ${backendName}`);
  return kernel.kernelFunc({
    inputs,
    backend: backend as tf.KernelBackend,
    attrs: attrs as tf.NamedAttrMap,
  }) as TensorInfo;
}

const ACTIVATION_KERNELS: Record<string, string> = {
  relu: 'Relu',
  relu6: 'Relu6',
  elu: 'Elu',
  sigmoid: 'Sigmoid',
  leakyrelu: 'LeakyRelu',
  prelu: 'Prelu',
};

function install(backendName: BlasHostBackend, sgemm: Sgemm): void {
  if (installed.has(backendName)) return;
  const originalBatch = tf.getKernel('BatchMatMul', backendName);
  const originalFused = tf.getKernel('_FusedMatMul', backendName);
  if (!originalBatch || !originalFused) {
    throw new Error(`tfjs backend ${backendName} has no BatchMatMul/_FusedMatMul to replace`);
  }
  const batchMatMul: tf.KernelFunc = (args: KernelArgs) => {
    if (!enabled.has(backendName)) return originalBatch.kernelFunc(args);
    const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
    const { transposeA, transposeB } = args.attrs as { transposeA: boolean; transposeB: boolean };
    return (
      blasMatMul(sgemm, backendName, args.backend, a, b, transposeA, transposeB) ??
      originalBatch.kernelFunc(args)
    );
  };
  const fused: tf.KernelFunc = (args: KernelArgs) => {
    if (!enabled.has(backendName)) return originalFused.kernelFunc(args);
    const { a, b, bias, preluActivationWeights } = args.inputs as Record<
      string,
      TensorInfo | undefined
    >;
    const { transposeA, transposeB, activation, leakyreluAlpha } = args.attrs as {
      transposeA: boolean;
      transposeB: boolean;
      activation?: string;
      leakyreluAlpha?: number;
    };
    const act = activation ?? 'linear';
    if (act !== 'linear' && !(act in ACTIVATION_KERNELS)) return originalFused.kernelFunc(args);
    const backend = args.backend as unknown as { disposeData(dataId: tf.DataId): boolean };
    let result = blasMatMul(sgemm, backendName, backend, a!, b!, transposeA, transposeB);
    if (!result) return originalFused.kernelFunc(args);
    const replace = (next: TensorInfo): void => {
      backend.disposeData(result!.dataId);
      result = next;
    };
    if (bias) replace(applyKernel('Add', backendName, backend, { a: result, b: bias }));
    if (act === 'prelu') {
      replace(
        applyKernel('Prelu', backendName, backend, { x: result, alpha: preluActivationWeights! }),
      );
    } else if (act === 'leakyrelu') {
      replace(
        applyKernel('LeakyRelu', backendName, backend, { x: result }, { alpha: leakyreluAlpha }),
      );
    } else if (act !== 'linear') {
      replace(applyKernel(ACTIVATION_KERNELS[act], backendName, backend, { x: result }));
    }
    return result;
  };
  for (const [original, kernelFunc] of [
    [originalBatch, batchMatMul],
    [originalFused, fused],
  ] as const) {
    tf.unregisterKernel(original.kernelName, backendName);
    tf.registerKernel({ ...original, kernelFunc });
  }
  installed.set(backendName, { batchMatMul, fused });
}

/**
 * Turns OpenBLAS matmul kernels on or off for `backendName`. Turning them on loads OpenBLAS
 * (BackendError when it is missing); turning them off never needs it.
 */
export function setBlasKernels(backendName: BlasHostBackend, on: boolean): void {
  if (!on) {
    enabled.delete(backendName);
    return;
  }
  // Loaded (or found missing) before anything is switched: a failure leaves the stock kernels.
  const { sgemm } = loadOpenBlas();
  install(backendName, sgemm);
  // Models built from now on keep their frozen weights in host memory (host-weight.kernels).
  installHostWeightKernels(backendName);
  enabled.add(backendName);
}
