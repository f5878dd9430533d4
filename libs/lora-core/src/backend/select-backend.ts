/**
 * LORAFLEET_BACKEND → an initialised tfjs backend (DESIGN §7, R17). `auto` walks
 * tfjs-node-gpu → tfjs-node → webgpu on a hardware adapter → wasm-blas → wasm → cpu-blas → cpu
 * and takes the first that loads (the order is by measured speed, docs/benchmarks.md). Any
 * explicit choice that cannot load fails with an error naming what is missing; a GPU request
 * never falls back to the CPU silently.
 */
import * as tf from '@tensorflow/tfjs';
import { setBlasKernels, type BlasHostBackend } from './blas.kernels';
import { BackendError, initBackend } from './backend.registry';
import { installEagerGradients } from './eager-gradients';
import { initWebgpuBackend, vulkanLoaderPresent } from './webgpu.backend';

import { REQUESTED_BACKENDS, type RequestedBackend } from '@lorafleet/contracts';

interface TfjsNodeModule {
  getBackend?: () => string;
}

/** Loads a tfjs-node package by name; undefined when it is not installed or fails to load. */
async function tryRequire(
  packageName: string,
): Promise<{ module?: TfjsNodeModule; error?: string }> {
  try {
    // Loading the package registers its "tensorflow" backend with tfjs as a side effect.
    return { module: (await import(packageName)) as TfjsNodeModule };
  } catch (error) {
    return { error: (error as Error).message.split('\n')[0] };
  }
}

async function useTensorflowBinding(packageName: string, wantGpu: boolean): Promise<string> {
  const loaded = await tryRequire(packageName);
  if (!loaded.module) {
    throw new BackendError(
      `${packageName} is not installed or failed to load (${loaded.error}). It downloads libtensorflow at ` +
        `install time; install it on a machine with network access (see docs/operations.md).`,
    );
  }
  if (!(await tf.setBackend('tensorflow'))) {
    throw new BackendError(`${packageName} loaded but the "tensorflow" backend did not initialise`);
  }
  await tf.ready();
  if (wantGpu) {
    const usingGpu = (tf.backend() as unknown as { isUsingGpuDevice?: boolean }).isUsingGpuDevice;
    if (!usingGpu) {
      throw new BackendError(
        `${packageName} loaded but TensorFlow found no usable GPU (check CUDA 11.2/cuDNN 8.1 and NVIDIA_VISIBLE_DEVICES)`,
      );
    }
    return 'tensorflow-gpu';
  }
  return 'tensorflow';
}

export async function selectBackend(requested: string): Promise<string> {
  installEagerGradients();
  if (!(REQUESTED_BACKENDS as readonly string[]).includes(requested)) {
    throw new BackendError(
      `unknown backend "${requested}"; choose one of ${REQUESTED_BACKENDS.join(', ')}`,
    );
  }
  switch (requested as RequestedBackend) {
    case 'gpu':
      return useTensorflowBinding('@tensorflow/tfjs-node-gpu', true);
    case 'tensorflow':
      return useTensorflowBinding('@tensorflow/tfjs-node', false);
    case 'webgpu':
      return (await initWebgpuBackend()).backend;
    case 'wasm-blas':
      return useBlas('wasm');
    case 'cpu-blas':
      return useBlas('cpu');
    case 'wasm':
    case 'cpu':
      return initBackend(requested as 'wasm' | 'cpu');
    case 'auto': {
      for (const [packageName, gpu] of [
        ['@tensorflow/tfjs-node-gpu', true],
        ['@tensorflow/tfjs-node', false],
      ] as const) {
        try {
          return await useTensorflowBinding(packageName, gpu);
        } catch {
          // Not installed here; try the next one.
        }
      }
      if (vulkanLoaderPresent()) {
        try {
          const gpu = await initWebgpuBackend({ hardwareOnly: true });
          if (!gpu.software) return gpu.backend;
        } catch {
          // No hardware adapter; the CPU backends follow.
        }
      }
      // By measured speed (docs/benchmarks.md): wasm-blas, then plain wasm, which beats
      // cpu-blas because the cpu backend's other ops are plain JavaScript.
      const cpuChoices: Array<() => Promise<string>> = [
        () => useBlas('wasm'),
        () => initBackend('wasm'),
        () => useBlas('cpu'),
      ];
      for (const choose of cpuChoices) {
        try {
          return await choose();
        } catch {
          // Not available here (no OpenBLAS, no wasm); try the next.
        }
      }
      return initBackend('cpu');
    }
  }
}

/** `wasm-blas` / `cpu-blas`: the host backend with its matmul kernels on OpenBLAS. */
async function useBlas(host: BlasHostBackend): Promise<string> {
  await initBackend(host);
  setBlasKernels(host, true); // BackendError naming the missing library
  return `${host}-blas`;
}

/** The backend named by `LORAFLEET_BACKEND` (default `auto`); unknown values fail loudly. */
export function requestedBackendFromEnv(env: NodeJS.ProcessEnv = process.env): RequestedBackend {
  const value = (env.LORAFLEET_BACKEND ?? 'auto').trim() || 'auto';
  if (!(REQUESTED_BACKENDS as readonly string[]).includes(value)) {
    throw new BackendError(
      `LORAFLEET_BACKEND="${value}" is not a backend; choose one of ${REQUESTED_BACKENDS.join(', ')}`,
    );
  }
  return value as RequestedBackend;
}

export interface SelectedBackend {
  requested: RequestedBackend;
  /**
   * What `selectBackend` picked: `tensorflow-gpu`, `tensorflow`, `webgpu`, `wasm-blas`, `wasm`,
   * `cpu-blas` or `cpu`.
   */
  backend: string;
  /** True on `tensorflow-gpu`, and on `webgpu` over a hardware adapter (not a software one). */
  gpu: boolean;
}

/** `selectBackend(LORAFLEET_BACKEND)`, reporting what was asked for and what was picked. */
export async function selectBackendFromEnv(
  env: NodeJS.ProcessEnv = process.env,
): Promise<SelectedBackend> {
  const requested = requestedBackendFromEnv(env);
  const backend = await selectBackend(requested);
  const gpu =
    backend === 'tensorflow-gpu' || (backend === 'webgpu' && !(await initWebgpuBackend()).software);
  return { requested, backend, gpu };
}
