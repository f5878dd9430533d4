/**
 * OpenBLAS `cblas_sgemm` through koffi (an FFI whose prebuilt binary ships in its npm
 * package, so nothing is compiled or downloaded). Loaded lazily and only on request: a
 * machine without `libopenblas.so.0` simply has no BLAS backends (`auto` moves on; an
 * explicit `wasm-blas`/`cpu-blas` fails loudly with what to install).
 */
import { BackendError } from './backend.error';

/**
 * Row-major single-precision GEMM: C[M,N] = alpha·op(A)[M,K]·op(B)[K,N] + beta·C, with
 * alpha = 1 and beta = 0 unless given (beta = 1 accumulates into C).
 */
export type Sgemm = (
  transA: boolean,
  transB: boolean,
  m: number,
  n: number,
  k: number,
  a: Float32Array,
  lda: number,
  b: Float32Array,
  ldb: number,
  c: Float32Array,
  ldc: number,
  alpha?: number,
  beta?: number,
) => void;

export interface OpenBlas {
  sgemm: Sgemm;
  /** The shared object that was loaded (for logs and the worker registry). */
  library: string;
}

const CBLAS_ROW_MAJOR = 101;
const CBLAS_NO_TRANS = 111;
const CBLAS_TRANS = 112;

/**
 * Where to look, in order. Debian's `libopenblas0-pthread` installs
 * `/usr/lib/x86_64-linux-gnu/libopenblas.so.0` through alternatives; the explicit
 * openblas-pthread paths cover machines where the alternative points at another BLAS.
 */
function candidateLibraries(env: NodeJS.ProcessEnv): string[] {
  const explicit = env.LORAFLEET_OPENBLAS_LIB?.trim();
  if (explicit) return [explicit];
  return [
    'libopenblas.so.0',
    '/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0',
    '/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0',
    'libopenblas.so',
  ];
}

/** Loaded libraries by candidate list (LORAFLEET_OPENBLAS_LIB changes the list). */
const loaded = new Map<string, OpenBlas>();

/** Loads OpenBLAS once per process; throws BackendError naming what is missing. */
export function loadOpenBlas(env: NodeJS.ProcessEnv = process.env): OpenBlas {
  const candidates = candidateLibraries(env);
  const cached = loaded.get(candidates.join('\n'));
  if (cached) return cached;
  let koffi: typeof import('koffi');
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- optional native FFI, loaded on demand
    koffi = require('koffi') as typeof import('koffi');
  } catch (error) {
    throw new BackendError(
      `the koffi FFI package failed to load (${(error as Error).message.split('\n')[0]}); run npm ci`,
    );
  }
  const failures: string[] = [];
  for (const library of candidates) {
    try {
      const lib = koffi.load(library);
      // Pointer arguments take TypedArrays directly (no copy): the output is written in place.
      const native = lib.func(
        'void cblas_sgemm(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *, int)',
      ) as (...args: unknown[]) => void;
      const sgemm: Sgemm = (transA, transB, m, n, k, a, lda, b, ldb, c, ldc, alpha = 1, beta = 0) =>
        native(
          CBLAS_ROW_MAJOR,
          transA ? CBLAS_TRANS : CBLAS_NO_TRANS,
          transB ? CBLAS_TRANS : CBLAS_NO_TRANS,
          m,
          n,
          k,
          alpha,
          a,
          lda,
          b,
          ldb,
          beta,
          c,
          ldc,
        );
      const blas = { sgemm, library };
      loaded.set(candidates.join('\n'), blas);
      return blas;
    } catch (error) {
      failures.push(`${library}: ${(error as Error).message.split('\n')[0]}`);
    }
  }
  throw new BackendError(
    `OpenBLAS is not installed or has no cblas_sgemm (${failures.join('; ')}). ` +
      `Install it with "apt-get install libopenblas0-pthread" or set LORAFLEET_OPENBLAS_LIB ` +
      `to the shared object.`,
  );
}
