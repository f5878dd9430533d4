/**
 * The tfjs host backends that install offline everywhere: `cpu` (pure JS) and `wasm`
 * (XNNPACK). Preparing wasm also installs lorafleet's kernel replacements (Slice/SplitV from
 * heap views, BatchMatMul on XNNPACK's fast path); `select-backend.ts` layers OpenBLAS
 * (`wasm-blas`, `cpu-blas`), webgpu and tfjs-node on top (DESIGN §7).
 */
import * as tf from '@tensorflow/tfjs';
import type { RequestedBackend } from '@lorafleet/contracts';
import { dirname } from 'node:path';

import { installActivationKernels } from './activation.kernels';
import { BackendError } from './backend.error';
import { installEagerGradients } from './eager-gradients';
import { setBlasKernels } from './blas.kernels';
import { installWasmSharedIdentity } from './wasm-identity.kernel';
import { installWasmFastMatMul } from './wasm-matmul.kernels';
import { installWasmSliceKernels } from './wasm-slice.kernels';

/**
 * The two of contracts' `REQUESTED_BACKENDS` (the one list of backend names) that this
 * registry initialises itself; typed against that list, so a name cannot drift from it.
 */
export const BACKEND_NAMES = ['cpu', 'wasm'] as const satisfies readonly RequestedBackend[];
export type BackendName = (typeof BACKEND_NAMES)[number];

export { BackendError };

let wasmPathsSet = false;

async function prepareWasm(): Promise<void> {
  if (wasmPathsSet) return;
  // Importing the package registers the 'wasm' backend factory. The .wasm binaries ship in
  // its dist folder; point tfjs there so nothing is fetched over the network.
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  const distDir = dirname(require.resolve('@tensorflow/tfjs-backend-wasm'));
  wasm.setWasmPaths(`${distDir}/`);
  installWasmSliceKernels();
  installWasmSharedIdentity();
  installActivationKernels('wasm');
  installWasmFastMatMul(); // before any OpenBLAS kernel, which wraps whatever is registered
  wasmPathsSet = true;
}

/** Activates backend `name` and returns the name tfjs reports; fails loudly otherwise. */
export async function initBackend(name: BackendName): Promise<string> {
  installEagerGradients();
  switch (name) {
    case 'cpu':
      installActivationKernels('cpu');
      break;
    case 'wasm':
      await prepareWasm();
      break;
    default:
      throw new BackendError(
        `unknown backend ${JSON.stringify(name)} (available: ${BACKEND_NAMES.join(', ')})`,
      );
  }
  let ok: boolean;
  try {
    ok = await tf.setBackend(name);
  } catch (error) {
    throw new BackendError(`backend "${name}" failed to initialise: ${(error as Error).message}`);
  }
  await tf.ready();
  if (!ok || tf.getBackend() !== name) {
    throw new BackendError(`backend "${name}" is not available (tfjs is on "${tf.getBackend()}")`);
  }
  // Plain `cpu`/`wasm` means the stock kernels; `selectBackend` turns OpenBLAS on after this.
  setBlasKernels(name, false);
  if (name === 'cpu') {
    // The cpu backend prints a "install tfjs-node" banner on first use in Node. The choice
    // of backend is deliberate here and recorded on the job, so the banner is only noise
    // on stderr (and in CLI output).
    (tf.backend() as unknown as { firstUse?: boolean }).firstUse = false;
  }
  return tf.getBackend();
}
