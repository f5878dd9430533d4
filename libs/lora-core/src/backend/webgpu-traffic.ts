/// <reference types="@webgpu/types" />
/**
 * Counts what crosses between host and GPU while `fn` runs on tfjs' webgpu backend (issue 18:
 * weights stay on the GPU, no host round trips in a training step). It wraps three methods of
 * the live `WebGPUBackend` for the duration of the call:
 * - `recordAndSubmit`: one compute dispatch per kernel program (each also writes one small
 *   uniform buffer with `queue.writeBuffer`, not counted as an upload);
 * - `uploadToGPU`: a tensor whose values are still on the host is copied into a new storage
 *   buffer (a weight on its first use, or an input built from host arrays);
 * - `getBufferData`: a buffer copied back and mapped for reading (`data()`; `dataSync` is not
 *   possible in Node).
 * Kernels tfjs-webgpu runs on the CPU (`WEBGPU_CPU_FORWARD`: tiny ops whose inputs were never
 * uploaded) do not dispatch and are not counted.
 */
import * as tf from '@tensorflow/tfjs';

export interface WebgpuTraffic {
  dispatches: number;
  uploads: number;
  uploadBytes: number;
  /** Bytes of the largest single upload (a weight would show up here). */
  largestUploadBytes: number;
  downloads: number;
  downloadBytes: number;
}

/** The parts of tfjs-webgpu's backend this wraps (its instance methods, 4.22). */
interface WebgpuBackendInternals {
  recordAndSubmit: (this: WebgpuBackendInternals, ...args: unknown[]) => unknown;
  uploadToGPU: (this: WebgpuBackendInternals, dataId: object) => void;
  getBufferData: (this: WebgpuBackendInternals, buffer: GPUBuffer) => Promise<ArrayBuffer>;
  tensorMap: { get(dataId: object): { values: ArrayLike<number> | null; resource: unknown } };
}

/** Runs `fn` and returns what it moved between host and GPU (webgpu must be the backend). */
export async function measureWebgpuTraffic<T>(
  fn: () => Promise<T>,
): Promise<{ result: T; traffic: WebgpuTraffic }> {
  if (tf.getBackend() !== 'webgpu') {
    throw new Error(
      `measureWebgpuTraffic needs the webgpu backend (tfjs is on "${tf.getBackend()}")`,
    );
  }
  const backend = tf.backend() as unknown as WebgpuBackendInternals;
  const traffic: WebgpuTraffic = {
    dispatches: 0,
    uploads: 0,
    uploadBytes: 0,
    largestUploadBytes: 0,
    downloads: 0,
    downloadBytes: 0,
  };
  const { recordAndSubmit, uploadToGPU, getBufferData } = backend;
  backend.recordAndSubmit = function (...args) {
    traffic.dispatches++;
    return recordAndSubmit.apply(this, args);
  };
  backend.uploadToGPU = function (dataId) {
    const data = this.tensorMap.get(dataId);
    if (data.resource == null && data.values != null) {
      const bytes = data.values.length * 4; // float32, int32 and bool all take 4 bytes there
      traffic.uploads++;
      traffic.uploadBytes += bytes;
      traffic.largestUploadBytes = Math.max(traffic.largestUploadBytes, bytes);
    }
    uploadToGPU.call(this, dataId);
  };
  backend.getBufferData = async function (buffer) {
    traffic.downloads++;
    traffic.downloadBytes += buffer.size;
    return getBufferData.call(this, buffer);
  };
  try {
    return { result: await fn(), traffic };
  } finally {
    // The wrappers are own properties shadowing the prototype's methods.
    const own = backend as unknown as Record<string, unknown>;
    delete own.recordAndSubmit;
    delete own.uploadToGPU;
    delete own.getBufferData;
  }
}
