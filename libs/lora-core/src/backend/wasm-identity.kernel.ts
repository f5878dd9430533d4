/**
 * `Identity` on the wasm backend by reference, as the cpu backend does it.
 *
 * tfjs saves every tensor a gradient needs with `clone()` (engine `saveTensorsForBackwardMode`),
 * which runs `Identity`. The stock wasm kernel copies the buffer, so on wasm every activation
 * kept for backward existed twice (measured on GPT-2 small, seq 256: about half of a 1.25 GB
 * heap). tfjs tensors are immutable (a Variable's `assign` swaps its buffer, it never writes
 * into one), so sharing the buffer with a reference count, exactly what the wasm `Reshape`
 * kernel already does, is safe and makes the clone free.
 */
import * as tf from '@tensorflow/tfjs';

interface WasmBackendLike {
  incRef(dataId: tf.DataId): void;
}

let installed = false;

export function installWasmSharedIdentity(): void {
  if (installed) return;
  const stock = tf.getKernel('Identity', 'wasm');
  if (!stock) throw new Error('tfjs wasm backend has no Identity kernel to replace');
  const kernelFunc: tf.KernelFunc = (args) => {
    const { x } = args.inputs as { x: tf.TensorInfo };
    if (x.dtype === 'string') return stock.kernelFunc(args);
    (args.backend as unknown as WasmBackendLike).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  };
  tf.unregisterKernel('Identity', 'wasm');
  tf.registerKernel({ ...stock, kernelFunc });
  installed = true;
}
