/**
 * GELU (tanh approximation) and SiLU as single elementwise kernels for the tfjs `wasm` and
 * `cpu` backends (so also `wasm-blas` and `cpu-blas`).
 *
 * Built from tfjs ops, GELU-tanh is nine elementwise kernels forward and about twice that in
 * autodiff's backward, each a full pass over a [B·T, 4·C] tensor, and every op that keeps an
 * input for its gradient clones it (a real copy on wasm). On the reference training step this
 * made GELU's Tanh alone the second most expensive op after the matmuls (the stock wasm Tanh
 * is scalar libm). Here one pass over the tensors' own memory (the wasm heap, no copy in or
 * out, or the cpu backend's Float32Arrays) writes the value and the derivative dy/dx, which
 * the forward pass has almost for free; `nn.ops.ts` keeps the derivative for the backward
 * pass, which is then a single multiply. Measured on the reference step (docs/benchmarks.md):
 * 1,389 → 1,185 kernels, +18% tokens/s on wasm-blas.
 *
 * The maths runs in float64 and rounds once to float32; GELU's tanh is approximated to within
 * float32 tanh's own error (below) and SiLU's sigmoid is exact, so results agree with the
 * composite ops to float32 rounding. `nn.ops.ts` keeps the composite for backends without
 * these kernels (webgpu, tensorflow).
 */
import * as tf from '@tensorflow/tfjs';

/** Both take `{ x }` and return `[y, dy/dx]`, each of x's shape. */
export const GELU_TANH_KERNEL = 'LorafleetGeluTanh';
export const SILU_KERNEL = 'LorafleetSilu';

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const GELU_CUBIC = 0.044715;

type KernelArgs = Parameters<tf.KernelFunc>[0];

/** The parts of the wasm and cpu backends these kernels use (both are internal classes). */
interface WasmBackendLike {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(info: tf.TensorInfo): tf.TypedArray;
}
interface CpuBackendLike {
  data: { get(dataId: tf.DataId): { values?: unknown } };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: Float32Array): tf.TensorInfo;
}

// Eigen's float32 tanh: u·P(u²)/Q(u²), P of degree 6 and Q of degree 3 in u².
const P1 = 4.89352455891786e-3;
const P3 = 6.37261928875436e-4;
const P5 = 1.48572235717979e-5;
const P7 = 5.12229709037114e-8;
const P9 = -8.60467152213735e-11;
const P11 = 2.00018790482477e-13;
const P13 = -2.76076847742355e-16;
const Q0 = 4.89352518554385e-3;
const Q2 = 2.268434632439e-3;
const Q4 = 1.18534705686654e-4;
const Q6 = 1.19825839466702e-6;

/**
 * tanh(u) in float64 to within 2.6e-8 absolute, under half a float32 ulp near ±1, i.e. as
 * close as float32 tanh itself. |u| ≤ 6 (almost every GELU input) takes Eigen's float32
 * rational approximation (the one TensorFlow's CPU kernels use), evaluated in Estrin form
 * (short dependency chains): a whole GELU element then costs ~6 ns in V8, against ~25 with
 * Math.tanh or ~15 with Math.exp, and ~22 for the stock wasm Tanh alone. Beyond that,
 * 1 − 2/(e^{2u} + 1) is exact and saturates to ±1 cleanly. NaN stays NaN.
 */
function tanh(u: number): number {
  if (u > 6 || u < -6) return 1 - 2 / (Math.exp(2 * u) + 1);
  const z = u * u;
  const z2 = z * z;
  const z4 = z2 * z2;
  const p = P1 + P3 * z + z2 * (P5 + P7 * z) + z4 * (P9 + P11 * z + z2 * P13);
  const q = Q0 + Q2 * z + z2 * (Q4 + Q6 * z);
  return (u * p) / q;
}

/**
 * y = 0.5·x·(1 + t) and dy/dx = 0.5·(1 + t) + 0.5·x·(1 − t²)·√(2/π)·(1 + 3·0.044715·x²),
 * t = tanh(√(2/π)·(x + 0.044715·x³)), elementwise.
 */
function geluTanh(x: Float32Array, y: Float32Array, dydx: Float32Array): void {
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    const v2 = v * v;
    const t = tanh(SQRT_2_OVER_PI * v * (1 + GELU_CUBIC * v2));
    y[i] = 0.5 * v * (1 + t);
    dydx[i] =
      0.5 * (1 + t) + 0.5 * v * (1 - t) * (1 + t) * SQRT_2_OVER_PI * (1 + 3 * GELU_CUBIC * v2);
  }
}

/** y = x·σ(x) and dy/dx = σ(x)·(1 + x·(1 − σ(x))), elementwise. */
function silu(x: Float32Array, y: Float32Array, dydx: Float32Array): void {
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    const s = 1 / (1 + Math.exp(-v));
    y[i] = v * s;
    dydx[i] = s * (1 + v * (1 - s));
  }
}

/** Fills the value and the derivative of an activation from its input, all of one size. */
type Activation = (x: Float32Array, y: Float32Array, dydx: Float32Array) => void;

function wasmKernel(f: Activation): tf.KernelFunc {
  return ({ inputs, backend }: KernelArgs) => {
    const { x } = inputs as { x: tf.TensorInfo };
    const wasm = backend as unknown as WasmBackendLike;
    // Allocate first: growing the heap detaches views taken before it.
    const y = wasm.makeOutput(x.shape, 'float32');
    const dydx = wasm.makeOutput(x.shape, 'float32');
    f(
      wasm.typedArrayFromHeap(x) as Float32Array,
      wasm.typedArrayFromHeap(y) as Float32Array,
      wasm.typedArrayFromHeap(dydx) as Float32Array,
    );
    return [y, dydx];
  };
}

function cpuKernel(f: Activation): tf.KernelFunc {
  return ({ inputs, backend }: KernelArgs) => {
    const { x } = inputs as { x: tf.TensorInfo };
    const cpu = backend as unknown as CpuBackendLike;
    const size = tf.util.sizeFromShape(x.shape);
    const [y, dydx] = [new Float32Array(size), new Float32Array(size)];
    f(cpu.data.get(x.dataId).values as Float32Array, y, dydx);
    return [
      cpu.makeTensorInfo(x.shape, 'float32', y),
      cpu.makeTensorInfo(x.shape, 'float32', dydx),
    ];
  };
}

const KERNELS: Array<[string, Activation]> = [
  [GELU_TANH_KERNEL, geluTanh],
  [SILU_KERNEL, silu],
];

/**
 * Registers the fused kernels for `backend` (once per process and backend). The registry is
 * global, so this works before the backend has initialised.
 */
export function installActivationKernels(backendName: 'wasm' | 'cpu'): void {
  for (const [kernelName, f] of KERNELS) {
    if (tf.getKernel(kernelName, backendName)) continue;
    const kernelFunc = backendName === 'wasm' ? wasmKernel(f) : cpuKernel(f);
    tf.registerKernel({ kernelName, backendName, kernelFunc });
  }
}

/**
 * Whether the active backend has the fused `kernelName` (float32 inputs only).
 * `LORAFLEET_FUSED_ACTIVATIONS=0` keeps the composite ops (the benchmark's "before" figure).
 */
export function hasFusedActivation(kernelName: string, x: tf.Tensor): boolean {
  return (
    x.dtype === 'float32' &&
    process.env.LORAFLEET_FUSED_ACTIVATIONS !== '0' &&
    tf.getKernel(kernelName, tf.getBackend()) !== undefined
  );
}
