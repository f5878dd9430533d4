/// <reference types="@webgpu/types" />
/**
 * tfjs `webgpu` backend in Node through Dawn's npm package `webgpu` (DESIGN §7, docs/gpu.md).
 *
 * `webgpu` is an optionalDependency (a prebuilt `dawn.node` per platform), so it is loaded
 * here, lazily, and its absence is a `BackendError`, never a crash at import time. Dawn picks
 * a native API: Vulkan on a Linux GPU node (needs libvulkan.so.1 plus the driver's Vulkan
 * ICD), or OpenGL ES through EGL, which on a machine without a GPU is Mesa's llvmpipe: slow,
 * but the same WGSL kernels, which is what CI exercises.
 *
 * Reading a tensor synchronously (`dataSync`) is not possible on this backend (tfjs-webgpu
 * needs an OffscreenCanvas for it); code that must run here reads with `await data()`.
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { delimiter, dirname, join } from 'node:path';
import { runInThisContext } from 'node:vm';
import { BackendError } from './backend.registry';
import { registerWebgpuCrossEntropyKernels } from './webgpu-cross-entropy.kernels';

export interface WebgpuBackendOptions {
  /**
   * Skip the hardware attempt and go straight to the software path (Dawn's OpenGL ES backend,
   * i.e. llvmpipe without a GPU). `LORAFLEET_WEBGPU_BACKEND` still wins when set.
   */
  forceFallback?: boolean;
  /**
   * Only Dawn's default (hardware) backend, no GLES fallback: what `LORAFLEET_BACKEND=auto`
   * asks for, since a software adapter is slower than wasm.
   */
  hardwareOnly?: boolean;
}

export interface WebgpuBackendInfo {
  backend: 'webgpu';
  /** Adapter description as Dawn reports it, plus the Dawn backend used, e.g. `… (opengles)`. */
  adapter: string;
  /** True for a software rasteriser (llvmpipe, lavapipe, SwiftShader): not worth using by default. */
  software: boolean;
  /**
   * The device's limits that bound model size, as granted (the adapter's own, not WebGPU's
   * defaults: the default 128 MiB binding is smaller than gpt2-small's 154 MB embedding). A
   * tensor larger than `maxStorageBufferBindingSize` cannot be bound by any tfjs kernel.
   */
  limits: WebgpuDeviceLimits;
}

export interface WebgpuDeviceLimits {
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
  maxStorageBuffersPerShaderStage: number;
  maxComputeWorkgroupStorageSize: number;
}

/**
 * Caps the largest buffer lorafleet plans for on webgpu below what the adapter allows: weights
 * past it are stored as row blocks (models/row-blocked.matrix.ts) and the pre-flight checks
 * against it. Tests force splitting on a tiny model with it; an operator can use it where a
 * driver reports more than it can really bind.
 */
export const WEBGPU_MAX_BINDING_ENV = 'LORAFLEET_WEBGPU_MAX_BINDING_BYTES';

/** Dawn backends `LORAFLEET_WEBGPU_BACKEND` may name (Dawn's `backend=` toggle values). */
export const DAWN_BACKENDS = ['vulkan', 'opengles', 'opengl', 'd3d12', 'd3d11', 'metal'] as const;
export type DawnBackend = (typeof DAWN_BACKENDS)[number];

interface DawnModule {
  create(flags: string[]): GPU;
  globals: Record<string, unknown>;
}

/** One way of asking Dawn for an adapter. `dawnBackend` null = Dawn's own default choice. */
interface Attempt {
  dawnBackend: DawnBackend | null;
  compatibility: boolean;
}

const SOFTWARE_ADAPTER = /llvmpipe|lavapipe|softpipe|swiftshader|software|basic render/i;

let active: WebgpuBackendInfo | null = null;
/** Dawn errors no call returned (an invalid pipeline makes a kernel write nothing, silently). */
const deviceErrors: string[] = [];

/**
 * Validation / out-of-memory errors the webgpu device reported since it was created. Dawn
 * also prints them; an entry here means some kernel output is garbage (usually zeros).
 */
export function webgpuDeviceErrors(): readonly string[] {
  return deviceErrors;
}

/**
 * The largest tensor, in bytes, the active backend can bind in one buffer: on webgpu the
 * smaller of the device's `maxStorageBufferBindingSize` and `maxBufferSize`, lowered by
 * `LORAFLEET_WEBGPU_MAX_BINDING_BYTES`; null on every other backend, where a tensor may be as
 * large as memory allows. Model construction splits weights past it into row blocks.
 */
export function deviceBindingLimitBytes(env: NodeJS.ProcessEnv = process.env): number | null {
  if (!active || tf.getBackend() !== 'webgpu') return null;
  const device = Math.min(active.limits.maxStorageBufferBindingSize, active.limits.maxBufferSize);
  const raw = env[WEBGPU_MAX_BINDING_ENV]?.trim();
  if (raw === undefined || raw === '') return device;
  if (!/^[1-9][0-9]*$/.test(raw)) {
    throw new BackendError(
      `${WEBGPU_MAX_BINDING_ENV}="${raw}" must be a positive whole number of bytes`,
    );
  }
  return Math.min(device, Number(raw));
}

/**
 * Node's own `process`. Under Jest, modules see a sandboxed copy: writes to its `env` never
 * reach the C environment Mesa reads, and its `require` cannot load ESM. `runInThisContext`
 * evaluates in Node's main context, where `process` is the real one. Elsewhere it is simply
 * `process`.
 */
function nodeProcess(): NodeJS.Process {
  return runInThisContext('process') as NodeJS.Process;
}

/** Node's `require` (not a test runner's), resolving from this file. */
function nodeRequire(): NodeJS.Require {
  const moduleApi = nodeProcess().getBuiltinModule?.('node:module') as
    typeof import('node:module') | undefined;
  return (moduleApi?.createRequire ?? createRequire)(__filename);
}

/**
 * Loads Dawn. The package entry is ESM, which Node ≥ 20.19 `require`s; it also patches
 * GPUDevice.destroy to unmap buffers, which is why the native addon is only loaded directly
 * when the entry cannot be (older Node).
 */
function loadDawn(): DawnModule {
  const load = nodeRequire();
  let packageDir: string;
  try {
    packageDir = dirname(load.resolve('webgpu/package.json'));
  } catch {
    throw new BackendError(
      'the optional package "webgpu" (Dawn) is not installed; run `npm install` without ' +
        '--omit=optional on a supported platform (linux-x64, linux-arm64, darwin, win32)',
    );
  }
  try {
    return load('webgpu') as DawnModule;
  } catch (entryError) {
    const arch = process.platform === 'darwin' ? 'universal' : process.arch;
    const addon = join(packageDir, 'dist', `${process.platform}-${arch}`, 'dawn.node');
    if (!existsSync(addon)) {
      throw new BackendError(
        `the "webgpu" package has no prebuilt Dawn for ${process.platform}-${process.arch} ` +
          `(${addon} missing; entry failed: ${firstLine(entryError)})`,
      );
    }
    try {
      return load(addon) as DawnModule;
    } catch (addonError) {
      throw new BackendError(`Dawn (${addon}) failed to load: ${firstLine(addonError)}`);
    }
  }
}

function firstLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split('\n')[0];
}

/** The attempts to make, in order: env override, else hardware default then GLES. */
function attemptsFor(options: WebgpuBackendOptions, env: NodeJS.ProcessEnv): Attempt[] {
  const forced = env.LORAFLEET_WEBGPU_BACKEND?.trim().toLowerCase();
  if (forced) {
    if (!(DAWN_BACKENDS as readonly string[]).includes(forced)) {
      throw new BackendError(
        `LORAFLEET_WEBGPU_BACKEND="${forced}" is not a Dawn backend; choose one of ${DAWN_BACKENDS.join(', ')}`,
      );
    }
    const dawnBackend = forced as DawnBackend;
    // Dawn exposes GL/GLES adapters only at the "compatibility" feature level.
    return [{ dawnBackend, compatibility: dawnBackend === 'opengles' || dawnBackend === 'opengl' }];
  }
  const gles: Attempt = { dawnBackend: 'opengles', compatibility: true };
  const hardware: Attempt = { dawnBackend: null, compatibility: false };
  if (options.hardwareOnly) return [hardware];
  return options.forceFallback ? [gles] : [hardware, gles];
}

function sharedLibraryDirs(env: NodeJS.ProcessEnv): string[] {
  const fromEnv = (env.LD_LIBRARY_PATH ?? '').split(delimiter).filter(Boolean);
  const multiarch = process.arch === 'arm64' ? 'aarch64-linux-gnu' : 'x86_64-linux-gnu';
  return [
    ...fromEnv,
    `/usr/lib/${multiarch}`,
    `/lib/${multiarch}`,
    '/usr/lib64',
    '/usr/lib',
    '/usr/local/lib',
  ];
}

/**
 * Whether a Vulkan GPU can be there at all, checked without loading Dawn: the Vulkan loader
 * is installed and at least one driver manifest (ICD) is visible. `auto` tries webgpu only
 * then (on Linux a GPU adapter comes through Vulkan), which keeps Dawn's start-up and its
 * stderr warnings ("vkCreateInstance: Found no drivers!") off machines that have the loader
 * (the GPU bundle's CI check installs it) but no GPU driver.
 */
export function vulkanLoaderPresent(env: NodeJS.ProcessEnv = process.env): boolean {
  return hasSharedLibrary('libvulkan.so.1', env) && vulkanIcds(env).length > 0;
}

function hasSharedLibrary(name: string, env: NodeJS.ProcessEnv): boolean {
  return sharedLibraryDirs(env).some((dir) => existsSync(join(dir, name)));
}

/** Vulkan ICD manifests the loader would see (VK_DRIVER_FILES / VK_ICD_FILENAMES win). */
function vulkanIcds(env: NodeJS.ProcessEnv): string[] {
  const explicit = env.VK_DRIVER_FILES ?? env.VK_ICD_FILENAMES;
  if (explicit) return explicit.split(delimiter).filter((f) => existsSync(f));
  const dirs = ['/usr/share/vulkan/icd.d', '/etc/vulkan/icd.d', '/usr/local/share/vulkan/icd.d'];
  return dirs.flatMap((dir) =>
    existsSync(dir)
      ? readdirSync(dir)
          .filter((f) => f.endsWith('.json'))
          .map((f) => join(dir, f))
      : [],
  );
}

/** Why an attempt found no adapter, naming the missing piece where it can be told. */
function explainNoAdapter(attempt: Attempt, env: NodeJS.ProcessEnv): string {
  const label = attempt.dawnBackend ?? 'default';
  if (process.platform !== 'linux') return `Dawn's ${label} backend found no adapter`;
  if (attempt.dawnBackend === null || attempt.dawnBackend === 'vulkan') {
    if (!hasSharedLibrary('libvulkan.so.1', env)) {
      return `Dawn's ${label} backend found no adapter: libvulkan.so.1 is missing (apt-get install libvulkan1)`;
    }
    const icds = vulkanIcds(env);
    if (icds.length === 0) {
      return (
        `Dawn's ${label} backend found no adapter: libvulkan.so.1 is present but no Vulkan ICD ` +
        `(driver manifest) was found; on NVIDIA install the driver's Vulkan ICD ` +
        `(nvidia_icd.json) or point VK_DRIVER_FILES at it`
      );
    }
    return `Dawn's ${label} backend found no adapter (Vulkan ICDs seen: ${icds.join(', ')})`;
  }
  if (attempt.dawnBackend === 'opengles' || attempt.dawnBackend === 'opengl') {
    const missing = [
      'libEGL.so.1',
      attempt.dawnBackend === 'opengles' ? 'libGLESv2.so.2' : 'libGL.so.1',
    ].filter((lib) => !hasSharedLibrary(lib, env));
    const what = missing.length > 0 ? `${missing.join(' and ')} missing; ` : '';
    return (
      `Dawn's ${label} backend found no adapter (${what}needs libegl1, libegl-mesa0, libgles2 and ` +
      `libgl1-mesa-dri; EGL_PLATFORM=${env.EGL_PLATFORM ?? '<unset>'}, surfaceless without a display)`
    );
  }
  return `Dawn's ${label} backend found no adapter`;
}

async function requestAdapter(
  dawn: DawnModule,
  attempt: Attempt,
  env: NodeJS.ProcessEnv,
): Promise<{ gpu: GPU; adapter: GPUAdapter } | string> {
  if (attempt.dawnBackend === 'opengles' || attempt.dawnBackend === 'opengl') {
    // Headless: EGL must not look for an X11/Wayland display. Mesa reads this when Dawn opens
    // the EGL display, i.e. after create(), so setting it here is early enough; a value the
    // operator chose is kept. It must reach the C environment, hence Node's own `process`.
    env.EGL_PLATFORM ??= 'surfaceless';
    nodeProcess().env.EGL_PLATFORM ??= env.EGL_PLATFORM;
  }
  let gpu: GPU;
  try {
    gpu = dawn.create(attempt.dawnBackend ? [`backend=${attempt.dawnBackend}`] : []);
  } catch (error) {
    return `Dawn could not start (${attempt.dawnBackend ?? 'default'}): ${firstLine(error)}`;
  }
  const request: GPURequestAdapterOptions = { powerPreference: 'high-performance' };
  if (attempt.compatibility) {
    (request as GPURequestAdapterOptions & { featureLevel?: string }).featureLevel =
      'compatibility';
  }
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter(request);
  } catch (error) {
    return `requestAdapter failed on Dawn's ${attempt.dawnBackend ?? 'default'} backend: ${firstLine(error)}`;
  }
  return adapter ? { gpu, adapter } : explainNoAdapter(attempt, env);
}

/**
 * `GPUAdapter.info` (Dawn has it; the @webgpu/types version tfjs resolves predates it), with
 * Dawn's `isFallbackAdapter` flag.
 */
function infoOf(adapter: GPUAdapter): GPUAdapterInfo & { isFallbackAdapter?: boolean } {
  return (adapter as GPUAdapter & { info: GPUAdapterInfo & { isFallbackAdapter?: boolean } }).info;
}

function describeAdapter(info: GPUAdapterInfo, dawnBackend: DawnBackend | null): string {
  const parts = [info.vendor, info.architecture, info.device, info.description]
    .map((s) => (s ?? '').trim())
    .filter((s, i, all) => s.length > 0 && all.indexOf(s) === i);
  const text = parts.length > 0 ? parts.join(' / ') : 'unnamed adapter';
  return `${text} (${dawnBackend ?? 'default'})`;
}

function isSoftwareAdapter(adapter: GPUAdapter): boolean {
  const info = infoOf(adapter);
  if (info.isFallbackAdapter === true) return true;
  return [info.vendor, info.architecture, info.device, info.description].some((s) =>
    SOFTWARE_ADAPTER.test(s ?? ''),
  );
}

/**
 * Makes `navigator.gpu` (and the GPUBufferUsage & co. constants tfjs-webgpu reads as globals)
 * visible before `@tensorflow/tfjs-backend-webgpu` is imported: that import only registers
 * the backend when it sees `navigator.gpu`. Node ≥ 21 has a read-only `navigator` getter on
 * globalThis, hence defineProperty rather than assignment.
 */
function exposeGpu(gpu: GPU, globals: Record<string, unknown>): void {
  const g = globalThis as Record<string, unknown>;
  for (const [name, value] of Object.entries(globals)) {
    if (!(name in g)) g[name] = value;
  }
  const existing = g.navigator;
  if (existing !== null && typeof existing === 'object') {
    Object.defineProperty(existing, 'gpu', { value: gpu, configurable: true, writable: true });
  } else {
    Object.defineProperty(globalThis, 'navigator', {
      value: { gpu },
      configurable: true,
      writable: true,
    });
  }
}

/** The device tfjs-webgpu's own factory would request: the adapter's limits, optional timing. */
async function requestDevice(adapter: GPUAdapter): Promise<GPUDevice> {
  const limits = adapter.limits;
  const requiredFeatures: GPUFeatureName[] = adapter.features.has('timestamp-query')
    ? ['timestamp-query']
    : [];
  return adapter.requestDevice({
    requiredFeatures,
    requiredLimits: {
      maxComputeWorkgroupStorageSize: limits.maxComputeWorkgroupStorageSize,
      maxComputeWorkgroupsPerDimension: limits.maxComputeWorkgroupsPerDimension,
      maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
      maxBufferSize: limits.maxBufferSize,
      maxComputeWorkgroupSizeX: limits.maxComputeWorkgroupSizeX,
      maxComputeInvocationsPerWorkgroup: limits.maxComputeInvocationsPerWorkgroup,
      // Not requested upstream: the default (8) is below what GPUs and llvmpipe offer, and
      // every kernel binds one storage buffer per input.
      maxStorageBuffersPerShaderStage: limits.maxStorageBuffersPerShaderStage,
    },
  });
}

/**
 * tfjs-webgpu's AddN binds every input at once and has no fallback when there are more than
 * maxStorageBuffersPerShaderStage − 1 of them: the pipeline is invalid and the sum reads as
 * zeros. The trainer adds one term per LoRA matrix (gradient norm, finiteness check), which
 * is hundreds on a real model. Wrap the kernel to sum in chunks, as upstream Concat does.
 */
function registerChunkedAddN(): void {
  const upstream = tf.getKernel('AddN', 'webgpu');
  if (!upstream) throw new BackendError('tfjs-backend-webgpu registered no AddN kernel');
  const addN = upstream.kernelFunc;
  tf.unregisterKernel('AddN', 'webgpu');
  tf.registerKernel({
    kernelName: 'AddN',
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const gpuBackend = backend as { device: GPUDevice; disposeData(id: object): boolean };
      const maxInputs = Math.max(2, gpuBackend.device.limits.maxStorageBuffersPerShaderStage - 1);
      // AddN's inputs are an array of same-shape tensors (each [shape]).
      let terms = inputs as unknown as tf.TensorInfo[];
      const partials: tf.TensorInfo[] = [];
      while (terms.length > maxInputs) {
        const next: tf.TensorInfo[] = [];
        for (let i = 0; i < terms.length; i += maxInputs) {
          const chunk = terms.slice(i, i + maxInputs);
          if (chunk.length === 1) {
            next.push(chunk[0]);
            continue;
          }
          const sum = addN({ inputs: chunk as unknown as tf.NamedTensorInfoMap, backend, attrs });
          partials.push(sum as tf.TensorInfo);
          next.push(sum as tf.TensorInfo);
        }
        terms = next;
      }
      const out = addN({ inputs: terms as unknown as tf.NamedTensorInfoMap, backend, attrs });
      for (const partial of partials) gpuBackend.disposeData(partial.dataId);
      return out;
    },
  });
}

/**
 * Activates tfjs' `webgpu` backend on a Dawn adapter and describes it. Attempts, in order:
 * `LORAFLEET_WEBGPU_BACKEND` alone when set; otherwise Dawn's default backend (Vulkan on Linux)
 * and then OpenGL ES with EGL_PLATFORM=surfaceless. Once it has succeeded, later calls return
 * the same result (one Dawn device per process). Throws `BackendError` naming what is missing.
 */
export async function initWebgpuBackend(
  options: WebgpuBackendOptions = {},
): Promise<WebgpuBackendInfo> {
  if (active && tf.findBackend('webgpu')) {
    if (tf.getBackend() !== 'webgpu') await tf.setBackend('webgpu');
    return active;
  }
  const env = process.env;
  const attempts = attemptsFor(options, env);
  const dawn = loadDawn();

  const failures: string[] = [];
  let chosen: { gpu: GPU; adapter: GPUAdapter; attempt: Attempt } | null = null;
  for (const attempt of attempts) {
    const result = await requestAdapter(dawn, attempt, env);
    if (typeof result === 'string') {
      failures.push(result);
    } else {
      chosen = { ...result, attempt };
      break;
    }
  }
  if (!chosen) throw new BackendError(`webgpu: no adapter. ${failures.join('; ')}`);

  let device: GPUDevice;
  try {
    device = await requestDevice(chosen.adapter);
  } catch (error) {
    throw new BackendError(`webgpu: requestDevice failed: ${firstLine(error)}`);
  }
  device.addEventListener('uncapturederror', (event) => {
    deviceErrors.push((event as GPUUncapturedErrorEvent).error.message);
  });
  exposeGpu(chosen.gpu, dawn.globals);

  let WebGPUBackend: typeof import('@tensorflow/tfjs-backend-webgpu').WebGPUBackend;
  try {
    ({ WebGPUBackend } = await import('@tensorflow/tfjs-backend-webgpu'));
  } catch (error) {
    throw new BackendError(
      `@tensorflow/tfjs-backend-webgpu is not installed or failed to load: ${firstLine(error)}`,
    );
  }
  // The package registered its own factory on import; it would request a second adapter
  // without featureLevel "compatibility" (none on GLES). Register one that uses this device.
  // Priority 3, as upstream: a later `tf.ready()` without setBackend stays on webgpu.
  const adapterInfo = infoOf(chosen.adapter);
  tf.removeBackend('webgpu');
  tf.registerBackend('webgpu', () => new WebGPUBackend(device, adapterInfo), 3);
  registerChunkedAddN();
  registerWebgpuCrossEntropyKernels();

  let ok: boolean;
  try {
    ok = await tf.setBackend('webgpu');
  } catch (error) {
    throw new BackendError(`backend "webgpu" failed to initialise: ${firstLine(error)}`);
  }
  await tf.ready();
  if (!ok || tf.getBackend() !== 'webgpu') {
    throw new BackendError(`backend "webgpu" is not available (tfjs is on "${tf.getBackend()}")`);
  }
  active = {
    backend: 'webgpu',
    adapter: describeAdapter(adapterInfo, chosen.attempt.dawnBackend),
    software: isSoftwareAdapter(chosen.adapter),
    limits: {
      maxStorageBufferBindingSize: device.limits.maxStorageBufferBindingSize,
      maxBufferSize: device.limits.maxBufferSize,
      maxStorageBuffersPerShaderStage: device.limits.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupStorageSize: device.limits.maxComputeWorkgroupStorageSize,
    },
  };
  return active;
}
