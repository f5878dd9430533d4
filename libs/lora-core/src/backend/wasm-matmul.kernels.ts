/**
 * `BatchMatMul` on the tfjs `wasm` backend routed to XNNPACK's fast path (DESIGN §7).
 *
 * tfjs-backend-wasm 4.22 multiplies with XNNPACK only when neither input is transposed and
 * both batch sizes are 1; every other form (all gradients, attention's batched products) runs
 * a scalar loop, measured at 0.4–0.8 GFLOP/s against 6–30 on the fast path. This kernel puts
 * any product into fast-path form first:
 *   - a transposed input is transposed explicitly (a Transpose kernel is a memory copy);
 *   - a batch against a shared right-hand side folds into one product, [batch·m, k]·[k, n];
 *   - equal batches (attention) run one 2-D product per batch entry on heap copies.
 * Only the layout the stock kernel itself barely supports (both batch shapes broadcast)
 * stays on the stock kernel. Results equal the stock kernel's up to float32 summation order.
 *
 * The model's own products (backend/matmul.ops.ts) already avoid the slow forms at the call
 * site; this covers everything else, and with `wasm-blas` the OpenBLAS kernel sits on top.
 * `LORAFLEET_WASM_FAST_MATMUL=0` restores the stock path (the benchmark's "before" figure).
 */
import * as tf from '@tensorflow/tfjs';

interface WasmBackendLike {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(info: tf.TensorInfo): tf.TypedArray;
  disposeData(dataId: tf.DataId): boolean;
}

/** Whether the fast path is on (read per call, so a benchmark can compare both). */
export function wasmFastMatMulEnabled(): boolean {
  return process.env.LORAFLEET_WASM_FAST_MATMUL !== '0';
}

function product(values: readonly number[]): number {
  return values.reduce((p, v) => p * v, 1);
}

function runKernel(
  name: string,
  backend: WasmBackendLike,
  inputs: Record<string, tf.TensorInfo>,
  attrs: Record<string, unknown>,
): tf.TensorInfo {
  const kernel = tf.getKernel(name, 'wasm');
  if (!kernel) throw new Error(`wasm kernel ${name} is not registered`);
  return kernel.kernelFunc({
    inputs,
    backend: backend,
    attrs: attrs as tf.NamedAttrMap,
  }) as tf.TensorInfo;
}

/** [..., r, c] → [..., c, r] as a new buffer. */
function transposeLastTwo(backend: WasmBackendLike, x: tf.TensorInfo): tf.TensorInfo {
  const perm = x.shape.map((_, axis) => axis);
  const rank = perm.length;
  [perm[rank - 2], perm[rank - 1]] = [perm[rank - 1], perm[rank - 2]];
  return runKernel('Transpose', backend, { x }, { perm });
}

let installed = false;
/** Products rewritten into fast-path form so far (tests read it). */
let rewritten = 0;
export function wasmFastMatMulCount(): number {
  return rewritten;
}

/** Wraps the wasm backend's BatchMatMul (once per process). */
export function installWasmFastMatMul(): void {
  if (installed) return;
  const stock = tf.getKernel('BatchMatMul', 'wasm');
  if (!stock) return;
  const plainProduct = (
    backend: WasmBackendLike,
    a: tf.TensorInfo,
    b: tf.TensorInfo,
  ): tf.TensorInfo =>
    stock.kernelFunc({
      inputs: { a, b },
      backend: backend,
      attrs: { transposeA: false, transposeB: false },
    }) as tf.TensorInfo;

  const kernelFunc: tf.KernelFunc = (args) => {
    const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    const { transposeA, transposeB } = args.attrs as { transposeA: boolean; transposeB: boolean };
    const batchA = product(a.shape.slice(0, -2));
    const batchB = product(b.shape.slice(0, -2));
    let batch = -1; // entries of the broadcast batch shape; -1 when the shapes do not broadcast
    try {
      batch = product(
        tf.backend_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2)),
      );
    } catch {
      // left to the stock kernel, which raises tfjs's own error
    }
    const alreadyFast = !transposeA && !transposeB && batchA === 1 && batchB === 1;
    // Layouts that map onto 2-D products: each side is either one matrix or one per entry.
    const foldable = batch > 0 && [1, batch].includes(batchA) && [1, batch].includes(batchB);
    if (
      !wasmFastMatMulEnabled() ||
      alreadyFast ||
      !foldable ||
      a.dtype !== 'float32' ||
      b.dtype !== 'float32' ||
      a.shape.length < 2 ||
      b.shape.length < 2
    ) {
      return stock.kernelFunc(args);
    }
    rewritten++;
    const backend = args.backend as unknown as WasmBackendLike;
    const temporaries: tf.TensorInfo[] = [];
    const keep = <T extends tf.TensorInfo>(t: T): T => {
      temporaries.push(t);
      return t;
    };
    try {
      const a2 = transposeA ? keep(transposeLastTwo(backend, a)) : a; // [...batchA, m, k]
      const b2 = transposeB ? keep(transposeLastTwo(backend, b)) : b; // [...batchB, k, n]
      const [m, k] = a2.shape.slice(-2);
      const [k2, n] = b2.shape.slice(-2);
      if (k !== k2) return stock.kernelFunc(args); // tfjs's own shape error
      const batchShape = tf.backend_util.assertAndGetBroadcastShape(
        a.shape.slice(0, -2),
        b.shape.slice(0, -2),
      );
      const outShape = [...batchShape, m, n];
      const reshape = (x: tf.TensorInfo, shape: number[]) =>
        keep(runKernel('Reshape', backend, { x }, { shape }));
      if (batchB === 1) {
        // [batch·m, k] · [k, n]: rows of every batch entry are contiguous.
        const folded = keep(
          plainProduct(backend, reshape(a2, [1, batchA * m, k]), reshape(b2, [1, k, n])),
        ); // [1, batch·m, n]
        return runKernel('Reshape', backend, { x: folded }, { shape: outShape });
      }
      // One 2-D product per batch entry, on copies of each entry (cheap heap copies).
      const out = backend.makeOutput(outShape, 'float32');
      const entry = (x: tf.TensorInfo, rows: number, cols: number, i: number): tf.TensorInfo => {
        const part = backend.makeOutput([1, rows, cols], 'float32');
        const size = rows * cols;
        const source = backend.typedArrayFromHeap(x); // views after the allocation above
        backend.typedArrayFromHeap(part).set(source.subarray(i * size, (i + 1) * size));
        return part;
      };
      for (let i = 0; i < batch; i++) {
        const ai = batchA === 1 ? reshape(a2, [1, m, k]) : keep(entry(a2, m, k, i)); // [1, m, k]
        const bi = keep(entry(b2, k, n, batchB === 1 ? 0 : i)); // [1, k, n]
        const oi = keep(plainProduct(backend, ai, bi)); // [1, m, n]
        backend.typedArrayFromHeap(out).set(backend.typedArrayFromHeap(oi), i * m * n);
        for (const t of [ai, bi, oi]) {
          backend.disposeData(t.dataId);
          temporaries.splice(temporaries.indexOf(t), 1);
        }
      }
      return out;
    } finally {
      for (const t of temporaries) backend.disposeData(t.dataId);
    }
  };
  tf.unregisterKernel('BatchMatMul', 'wasm');
  tf.registerKernel({ ...stock, kernelFunc });
  installed = true;
}
