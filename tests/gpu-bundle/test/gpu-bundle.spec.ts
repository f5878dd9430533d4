/**
 * The GPU bundle (issue 18, docs/gpu.md). No GPU here, so this is its acceptance test: the
 * bundle is built, copied to a directory outside the repository (no node_modules above it,
 * no NODE_PATH, a bare PATH), and its `run.sh --smoke` must train, resume byte-identically,
 * match the cpu backend's logits and benchmark, all on Dawn's GLES backend over llvmpipe with
 * the bundled Node. The full check on this GPU-less machine must fail, naming the missing
 * Vulkan driver and how to fix it: that is what an operator sees on a misconfigured node.
 */
import { spawnSync } from 'node:child_process';
import {
  cpSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
// tools/gpu-bundle is build tooling, not an Nx project with an import path; this suite is its
// test (it also lints and typechecks it, project.json), so the source is imported directly.
// eslint-disable-next-line @nx/enforce-module-boundaries
import { discoverVulkanIcd } from '../../../tools/gpu-bundle/vulkan-icd';

const ROOT = join(__dirname, '..', '..', '..');
const MAX_BYTES = 60 * 2 ** 20;

interface Step {
  name: string;
  status: 'ok' | 'failed' | 'skipped';
  error?: string;
  data?: Record<string, unknown>;
}

interface Report {
  mode: string;
  ok: boolean;
  failed: string[];
  dawn_backend: string | null;
  environment: { node_path: string };
  vulkan: { nvidiaFoundBy: string | null; fix: string | null };
  benchmark: Array<{ name: string; tokens_per_second: number | null }>;
  steps: Step[];
}

function sizeOf(dir: string): number {
  return readdirSync(dir, { withFileTypes: true }).reduce((n, e) => {
    const path = join(dir, e.name);
    return n + (e.isDirectory() ? sizeOf(path) : statSync(path).size);
  }, 0);
}

/** run.sh with nothing of this checkout reachable: the bundled Node, a bare PATH, no NODE_PATH. */
function runBundle(bundle: string, args: string[], home: string) {
  return spawnSync('bash', [join(bundle, 'run.sh'), ...args], {
    cwd: home,
    encoding: 'utf8',
    timeout: 180_000,
    env: {
      PATH: '/usr/bin:/bin',
      HOME: home,
      LORAFLEET_BUNDLE_NODE: 'bundled',
      ...(process.env.TMPDIR ? { TMPDIR: process.env.TMPDIR } : {}),
    },
  });
}

describe('GPU bundle', () => {
  let work: string;
  let bundle: string;

  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'lorafleet-gpu-bundle-'));
    const built = join(work, 'built');
    const build = spawnSync(
      process.execPath,
      [join(ROOT, 'tools', 'gpu-bundle', 'build.mjs'), '--out', built],
      {
        encoding: 'utf8',
        timeout: 240_000,
      },
    );
    if (build.status !== 0) throw new Error(`gpu:bundle failed:\n${build.stderr}`);
    bundle = join(work, 'copy', 'gpu-bundle');
    cpSync(built, bundle, { recursive: true });
    rmSync(built, { recursive: true, force: true });
  }, 300_000);

  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('is at most 60 MiB and has no way back into the repository', () => {
    expect(sizeOf(bundle)).toBeLessThanOrEqual(MAX_BYTES);
    expect(relative(ROOT, bundle).startsWith('..')).toBe(true);
    for (let dir = dirname(bundle); dir !== dirname(dir); dir = dirname(dir)) {
      expect(readdirSync(dir)).not.toContain('node_modules');
    }
    for (const file of [
      'run.sh',
      'app/gpu-check.cjs',
      'app/trainer.cjs',
      'app/node_modules/webgpu/dist/linux-x64/dawn.node',
      'lib/libvulkan.so.1',
      'lib/compat/libstdc++.so.6',
      'node/node.xz',
      'models/tiny-random-gpt2/model.safetensors',
      'data/train.jsonl',
      'reference/bench_shapes.py',
    ]) {
      expect(statSync(join(bundle, file)).size).toBeGreaterThan(0);
    }
  });

  it('run.sh --smoke trains, resumes byte-identically, matches cpu logits and benchmarks on llvmpipe', () => {
    const home = join(work, 'home-smoke');
    mkdirSync(home, { recursive: true });
    const run = runBundle(bundle, ['--smoke', '--out', join(home, 'report')], home);
    const report = JSON.parse(
      readFileSync(join(home, 'report', 'gpu-report.json'), 'utf8'),
    ) as Report;
    if (run.status !== 0)
      throw new Error(`run.sh --smoke exited ${run.status}:\n${run.stdout}\n${run.stderr}`);
    expect(report).toMatchObject({ mode: 'smoke', ok: true, failed: [], dawn_backend: 'opengles' });
    // The bundled Node, unpacked from node.xz inside the copy, ran it.
    expect(report.environment.node_path.startsWith(bundle)).toBe(true);
    const step = (name: string) => report.steps.find((s) => s.name === name);
    expect(step('train-resume')?.data).toMatchObject({
      backend: 'webgpu',
      resume_byte_identical: true,
    });
    const parity = step('parity')?.data as { base_max_abs: number; lora_max_abs: number };
    expect(parity.base_max_abs).toBeLessThanOrEqual(1e-4);
    expect(parity.lora_max_abs).toBeLessThanOrEqual(1e-4);
    expect(report.benchmark.map((b) => b.name)).toEqual([
      'reference',
      'gpt2-small',
      'smollm2-135m',
    ]);
    for (const row of report.benchmark) expect(row.tokens_per_second).toBeGreaterThan(0);
    expect(readFileSync(join(home, 'report', 'summary.txt'), 'utf8')).toMatch(/RESULT ok/);
  }, 200_000);

  it("refuses a shape whose unsplittable buffer exceeds the adapter's maxStorageBufferBindingSize", () => {
    // gpt2-small's 154 MB embedding is split into row blocks under llvmpipe's 128 MiB binding
    // limit, but at batch 16 × 1024 its [16, 12, 1024, 1024] attention scores (768 MiB) cannot
    // be: bound anyway, the kernels would read garbage; the benchmark must say so before
    // writing any weights.
    const dir = join(work, 'refusal');
    const target = join(dir, 'target.json');
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      target,
      JSON.stringify({
        name: 'gpt2-small',
        config: { model_type: 'gpt2', vocab_size: 50257, n_embd: 768, n_layer: 12, n_head: 12 },
        dtype: 'F32',
        batchSize: 16,
        seqLength: 1024,
        r: 8,
        targetModules: ['c_attn'],
      }),
    );
    const result = join(dir, 'result.json');
    const run = spawnSync(
      process.execPath,
      [
        join(bundle, 'app', 'gpu-check.cjs'),
        'bench',
        '--target',
        target,
        '--work',
        dir,
        '--steps',
        '1',
        '--result',
        result,
      ],
      {
        encoding: 'utf8',
        timeout: 60_000,
        env: {
          PATH: '/usr/bin:/bin',
          LD_LIBRARY_PATH: join(bundle, 'lib'),
          LORAFLEET_WEBGPU_BACKEND: 'opengles',
        },
      },
    );
    expect(run.status).toBe(1);
    expect(JSON.parse(readFileSync(result, 'utf8'))).toMatchObject({
      ok: false,
      embedding_bytes: 50257 * 768 * 4,
      embedding_split: true,
      largest_unsplit_buffer: 'the attention scores [16, 12, 1024, 1024]',
      max_storage_buffer_binding_size: 128 * 2 ** 20,
      error: expect.stringMatching(
        /the attention scores \[16, 12, 1024, 1024\] \(768 MiB\) exceeds this adapter's maxStorageBufferBindingSize \(128 MiB\) and cannot be split/,
      ) as unknown,
    });
    expect(readdirSync(dir)).not.toContain('models');
  }, 60_000);

  it('run.sh without a Vulkan GPU fails, naming the missing driver and the fix', () => {
    const home = join(work, 'home-full');
    mkdirSync(home, { recursive: true });
    const run = runBundle(bundle, ['--out', join(home, 'report')], home);
    expect(run.status).toBe(1);
    const report = JSON.parse(
      readFileSync(join(home, 'report', 'gpu-report.json'), 'utf8'),
    ) as Report;
    expect(report.ok).toBe(false);
    expect(report.failed).toContain('vulkan');
    expect(report.vulkan.nvidiaFoundBy).toBeNull();
    expect(report.vulkan.fix).toMatch(/NVIDIA/);
    expect(run.stdout).toMatch(/RESULT FAILED: vulkan/);
  }, 120_000);
});

describe('discoverVulkanIcd', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'lorafleet-icd-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  function fakeDriver(): string {
    const lib = join(dir, 'lib', 'libGLX_nvidia.so.0');
    mkdirSync(dirname(lib), { recursive: true });
    writeFileSync(lib, '');
    return lib;
  }

  it('takes VK_DRIVER_FILES alone when it is set, as the loader does', () => {
    const manifest = join(dir, 'nvidia_icd.json');
    writeFileSync(manifest, JSON.stringify({ ICD: { library_path: fakeDriver() } }));
    const found = discoverVulkanIcd(
      { VK_DRIVER_FILES: manifest, XDG_DATA_DIRS: dir },
      join(dir, 'w'),
    );
    expect(found.nvidiaFoundBy).toBe(`VK_DRIVER_FILES (${manifest})`);
    expect(found.env).toEqual({});
  });

  it('finds a manifest in an XDG data dir', () => {
    const icdDir = join(dir, 'share', 'vulkan', 'icd.d');
    mkdirSync(icdDir, { recursive: true });
    writeFileSync(
      join(icdDir, 'nvidia_icd.json'),
      JSON.stringify({ ICD: { library_path: fakeDriver() } }),
    );
    const found = discoverVulkanIcd({ XDG_DATA_DIRS: join(dir, 'share') }, join(dir, 'w'));
    expect(found.nvidiaFoundBy).toContain(icdDir);
  });

  it('tells a container without the graphics capability how to get Vulkan', () => {
    const libcuda = join(dir, 'lib', 'libcuda.so.1');
    mkdirSync(dirname(libcuda), { recursive: true });
    writeFileSync(libcuda, '');
    const found = discoverVulkanIcd(
      { LD_LIBRARY_PATH: dirname(libcuda), XDG_DATA_DIRS: dir, XDG_CONFIG_DIRS: dir },
      join(dir, 'w'),
    );
    expect(found.nvidiaFoundBy).toBeNull();
    expect(found.fix).toMatch(/NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics/);
  });

  it("writes a manifest for the driver's own library when none is installed", () => {
    const lib = fakeDriver();
    const found = discoverVulkanIcd(
      { LD_LIBRARY_PATH: dirname(lib), XDG_DATA_DIRS: dir, XDG_CONFIG_DIRS: dir },
      join(dir, 'w'),
    );
    const written = join(dir, 'w', 'nvidia_icd.json');
    expect(found.env).toEqual({ VK_DRIVER_FILES: written });
    expect(found.nvidiaFoundBy).toContain(lib);
    expect(JSON.parse(readFileSync(written, 'utf8'))).toMatchObject({ ICD: { library_path: lib } });
  });
});
