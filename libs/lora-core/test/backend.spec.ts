/**
 * Backend selection (DESIGN §7, R17): explicit choices fail loudly and name what is missing;
 * `auto` walks tfjs-node-gpu → tfjs-node → wasm-blas → cpu-blas → wasm → cpu; a GPU request
 * never runs on the CPU.
 * This machine has neither tfjs-node package (they download libtensorflow at install), so
 * the "installed" cases use a virtual module that registers a stand-in `tensorflow` backend.
 */
import * as tf from '@tensorflow/tfjs';
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';

import {
  BackendError,
  REQUESTED_BACKENDS,
  blasKernelsActive,
  requestedBackendFromEnv,
  selectBackend,
  selectBackendFromEnv,
} from '../src';

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a rejection');
}

describe('selectBackend without tfjs-node packages', () => {
  it('gpu: throws BackendError naming @tensorflow/tfjs-node-gpu', async () => {
    const error = await rejection(selectBackend('gpu'));
    expect(error).toBeInstanceOf(BackendError);
    expect(error.message).toContain('@tensorflow/tfjs-node-gpu is not installed');
    expect(tf.getBackend()).not.toBe('tensorflow');
  });

  it('tensorflow: throws naming @tensorflow/tfjs-node', async () => {
    const error = await rejection(selectBackend('tensorflow'));
    expect(error).toBeInstanceOf(BackendError);
    expect(error.message).toContain('@tensorflow/tfjs-node is not installed');
  });

  it('auto falls through to wasm-blas (OpenBLAS installed) and reports it', async () => {
    expect(await selectBackend('auto')).toBe('wasm-blas');
    expect(tf.getBackend()).toBe('wasm');
    expect(blasKernelsActive('wasm')).toBe(true);
  });

  describe('without OpenBLAS (LORAFLEET_OPENBLAS_LIB pointing nowhere)', () => {
    const saved = process.env.LORAFLEET_OPENBLAS_LIB;
    beforeAll(() => {
      process.env.LORAFLEET_OPENBLAS_LIB = '/nonexistent/libopenblas.so.0';
    });
    afterAll(() => {
      if (saved === undefined) delete process.env.LORAFLEET_OPENBLAS_LIB;
      else process.env.LORAFLEET_OPENBLAS_LIB = saved;
    });

    it('auto is not an error: it takes plain wasm', async () => {
      expect(await selectBackend('auto')).toBe('wasm');
      expect(blasKernelsActive('wasm')).toBe(false);
    });

    it.each(['wasm-blas', 'cpu-blas'])(
      'explicit %s fails loudly naming the library',
      async (name) => {
        const error = await rejection(selectBackend(name));
        expect(error).toBeInstanceOf(BackendError);
        expect(error.message).toContain('/nonexistent/libopenblas.so.0');
        expect(error.message).toContain('apt-get install libopenblas0-pthread');
        expect(blasKernelsActive(name.replace('-blas', ''))).toBe(false);
      },
    );
  });

  it('explicit wasm and cpu are honoured', async () => {
    expect(await selectBackend('cpu')).toBe('cpu');
    expect(await selectBackend('wasm')).toBe('wasm');
    expect(blasKernelsActive('wasm')).toBe(false);
  });

  it('unknown backends fail loudly, listing the known ones', async () => {
    expect((await rejection(selectBackend('tpu'))).message).toContain(
      REQUESTED_BACKENDS.join(', '),
    );
  });

  it('reads LORAFLEET_BACKEND (default auto) and reports requested and picked', async () => {
    expect(requestedBackendFromEnv({})).toBe('auto');
    expect(() => requestedBackendFromEnv({ LORAFLEET_BACKEND: 'gpus' })).toThrow(
      /LORAFLEET_BACKEND="gpus"/,
    );
    expect(await selectBackendFromEnv({ LORAFLEET_BACKEND: 'cpu' })).toEqual({
      requested: 'cpu',
      backend: 'cpu',
      gpu: false,
    });
    const error = await rejection(selectBackendFromEnv({ LORAFLEET_BACKEND: 'gpu' }));
    expect(error.message).toContain('@tensorflow/tfjs-node-gpu');
  });
});

describe('selectBackend with a (stand-in) tfjs-node-gpu installed', () => {
  let usingGpu = false;
  beforeAll(() => {
    // What requiring @tensorflow/tfjs-node-gpu does: register the "tensorflow" backend.
    jest.doMock(
      '@tensorflow/tfjs-node-gpu',
      () => {
        tf.registerBackend('tensorflow', () => {
          const backend = new MathBackendCPU() as MathBackendCPU & { isUsingGpuDevice: boolean };
          backend.isUsingGpuDevice = usingGpu;
          return backend;
        });
        return {};
      },
      { virtual: true },
    );
  });
  afterEach(async () => {
    await selectBackend('wasm');
    tf.removeBackend('tensorflow');
    jest.resetModules();
  });

  it('gpu: TensorFlow without a usable GPU is an error, not a silent CPU run', async () => {
    usingGpu = false;
    const error = await rejection(selectBackend('gpu'));
    expect(error).toBeInstanceOf(BackendError);
    expect(error.message).toMatch(/found no usable GPU/);
  });

  it('gpu: with a GPU in use it reports tensorflow-gpu; auto picks it first', async () => {
    usingGpu = true;
    expect(await selectBackend('gpu')).toBe('tensorflow-gpu');
    await selectBackend('wasm');
    tf.removeBackend('tensorflow');
    jest.resetModules();
    expect(await selectBackend('auto')).toBe('tensorflow-gpu');
  });
});
