#!/usr/bin/env node
// `npm run gpu:bundle`: writes dist/gpu-bundle/, the self-contained GPU check for an
// air-gapped Linux x86-64 node with only the NVIDIA driver (issue 18, docs/gpu.md). It holds
// the worker's trainer child and the check/benchmark bundled by esbuild (tfjs included, so no
// node_modules), Dawn's dawn.node, the Vulkan loader from Debian's libvulkan1, this Node
// compressed with xz, a tiny model and data set, the PyTorch reference script, and run.sh.
//   node tools/gpu-bundle/build.mjs [--out DIR]
import { build } from 'esbuild';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const MAX_BYTES = 60 * 2 ** 20;
const root = path.join(import.meta.dirname, '..', '..');
const outArg = process.argv.indexOf('--out');
const out = path.resolve(
  outArg >= 0 ? process.argv[outArg + 1] : path.join(root, 'dist', 'gpu-bundle'),
);
const cache = path.join(root, 'node_modules', '.cache', 'lorafleet-gpu-bundle');
const log = (m) => process.stderr.write(`[gpu:bundle] ${m}\n`);
const fail = (m) => {
  log(`ERROR: ${m}`);
  process.exit(1);
};

if (process.platform !== 'linux' || process.arch !== 'x64') {
  fail(`the bundle targets linux-x64; this is ${process.platform}-${process.arch}`);
}
const started = Date.now();
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

// 1. JavaScript: one file per entry, tfjs and @lorafleet/* inside. Packages that are native
//    or optional stay outside and are never loaded on the webgpu/cpu path: koffi (OpenBLAS),
//    tfjs-node(-gpu) (libtensorflow), tfjs-backend-wasm (its .wasm files are not shipped), and
//    webgpu, which the bundle carries as a package of its own next to the code.
log('esbuild: trainer child and gpu-check');
await build({
  entryPoints: {
    trainer: path.join(root, 'apps', 'worker', 'src', 'trainer', 'trainer-child.ts'),
    'gpu-check': path.join(root, 'tools', 'gpu-bundle', 'gpu-check.ts'),
  },
  outdir: path.join(out, 'app'),
  outExtension: { '.js': '.cjs' },
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  minify: true,
  keepNames: true,
  legalComments: 'none',
  external: [
    'webgpu',
    'koffi',
    '@tensorflow/tfjs-node',
    '@tensorflow/tfjs-node-gpu',
    '@tensorflow/tfjs-backend-wasm',
  ],
  tsconfig: path.join(root, 'tsconfig.base.json'),
  logLevel: 'error',
});

// 2. Dawn: the `webgpu` package, linux-x64 only (its entry patches GPUDevice.destroy).
const require = createRequire(import.meta.url);
const webgpuDir = path.dirname(require.resolve('webgpu/package.json', { paths: [root] }));
const webgpuOut = path.join(out, 'app', 'node_modules', 'webgpu');
mkdirSync(path.join(webgpuOut, 'dist', 'linux-x64'), { recursive: true });
for (const file of ['package.json', 'index.js', 'LICENSE.md']) {
  copyFileSync(path.join(webgpuDir, file), path.join(webgpuOut, file));
}
copyFileSync(
  path.join(webgpuDir, 'dist', 'linux-x64', 'dawn.node'),
  path.join(webgpuOut, 'dist', 'linux-x64', 'dawn.node'),
);

// 3. The Vulkan loader from Debian's libvulkan1 (the NVIDIA driver ships the ICD, not this).
function findVulkanLoader() {
  for (const dir of [
    '/usr/lib/x86_64-linux-gnu',
    '/lib/x86_64-linux-gnu',
    '/usr/lib64',
    '/usr/lib',
  ]) {
    const candidate = path.join(dir, 'libvulkan.so.1');
    if (existsSync(candidate)) return realpathSync(candidate);
  }
  return null;
}
let loader = findVulkanLoader();
if (
  loader === null &&
  process.getuid?.() === 0 &&
  spawnSync('apt-get', ['--version']).status === 0
) {
  log('libvulkan.so.1 missing: apt-get install libvulkan1');
  const apt = spawnSync(
    'apt-get',
    ['install', '-y', '-q', '--no-install-recommends', 'libvulkan1'],
    { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } },
  );
  if (apt.status !== 0) fail('apt-get install libvulkan1 failed');
  loader = findVulkanLoader();
}
if (loader === null) fail('libvulkan.so.1 not found: apt-get install libvulkan1 (Debian/Ubuntu)');
mkdirSync(path.join(out, 'lib'), { recursive: true });
copyFileSync(loader, path.join(out, 'lib', 'libvulkan.so.1'));
// dawn.node wants libstdc++ with GLIBCXX_3.4.30 (GCC 12), newer than RHEL 9 ships. This
// machine's goes to lib/compat, which run.sh puts on LD_LIBRARY_PATH only when the node's own
// libstdc++ lacks that version: a newer system one must win, or it would break whatever else
// needs it (PyTorch). glibc ≥ 2.34 cannot be carried along: gpu-check reports an older one.
const libstdcxx = ['/usr/lib/x86_64-linux-gnu/libstdc++.so.6', '/usr/lib64/libstdc++.so.6'].find(
  (f) => existsSync(f),
);
if (libstdcxx === undefined) fail('libstdc++.so.6 not found');
mkdirSync(path.join(out, 'lib', 'compat'), { recursive: true });
copyFileSync(realpathSync(libstdcxx), path.join(out, 'lib', 'compat', 'libstdc++.so.6'));
if (existsSync('/usr/share/doc/libvulkan1/copyright')) {
  copyFileSync(
    '/usr/share/doc/libvulkan1/copyright',
    path.join(out, 'lib', 'libvulkan1.copyright'),
  );
}

// 4. Node, xz-compressed (94 MiB raw, about 24 MiB packed). Compressing takes ~40 s on one
//    core, so the result is cached per binary; run.sh unpacks it only where the node has no
//    Node ≥ 20 of its own, and checks it against the recorded sha256.
const nodeBinary = realpathSync(process.execPath);
const nodeStat = statSync(nodeBinary);
const nodeKey = `${process.version}-${nodeStat.size}-${Math.round(nodeStat.mtimeMs)}`;
const cachedXz = path.join(cache, `node-${nodeKey}.xz`);
if (!existsSync(cachedXz)) {
  if (spawnSync('xz', ['--version']).status !== 0) fail('xz not found: apt-get install xz-utils');
  log(`xz -6 ${nodeBinary} (${(nodeStat.size / 2 ** 20).toFixed(0)} MiB; cached afterwards)`);
  mkdirSync(cache, { recursive: true });
  execFileSync(
    'sh',
    ['-c', `xz -T2 -6 -c "$0" > "$1.partial" && mv "$1.partial" "$1"`, nodeBinary, cachedXz],
    {
      stdio: 'inherit',
    },
  );
}
mkdirSync(path.join(out, 'node'), { recursive: true });
copyFileSync(cachedXz, path.join(out, 'node', 'node.xz'));
const nodeSha = createHash('sha256').update(readFileSync(nodeBinary)).digest('hex');
writeFileSync(path.join(out, 'node', 'node.sha256'), `${nodeSha}  node\n`);
writeFileSync(path.join(out, 'node', 'VERSION'), `${process.version}\n`);

// 5. A tiny model and data set (first rows of the demo's G2P set, CMUdict licence alongside).
cpSync(
  path.join(root, 'models', 'tiny-random-gpt2'),
  path.join(out, 'models', 'tiny-random-gpt2'),
  {
    recursive: true,
  },
);
mkdirSync(path.join(out, 'data'), { recursive: true });
const head = (file, n) =>
  `${readFileSync(path.join(root, 'demo', 'g2p', file), 'utf8')
    .split('\n')
    .filter(Boolean)
    .slice(0, n)
    .join('\n')}\n`;
writeFileSync(path.join(out, 'data', 'train.jsonl'), head('train.jsonl', 64));
writeFileSync(path.join(out, 'data', 'valid.jsonl'), head('valid.jsonl', 16));
copyFileSync(
  path.join(root, 'demo', 'g2p', 'LICENSE-cmudict.txt'),
  path.join(out, 'data', 'LICENSE-cmudict.txt'),
);

// 6. The PyTorch reference step and the entry script.
mkdirSync(path.join(out, 'reference'), { recursive: true });
copyFileSync(
  path.join(root, 'tools', 'reference', 'bench_shapes.py'),
  path.join(out, 'reference', 'bench_shapes.py'),
);
copyFileSync(path.join(root, 'tools', 'gpu-bundle', 'run.sh'), path.join(out, 'run.sh'));
chmodSync(path.join(out, 'run.sh'), 0o755);
const commit = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' });
writeFileSync(
  path.join(out, 'BUILD'),
  `lorafleet GPU bundle\nbuilt ${new Date().toISOString()} from commit ${commit.stdout.trim() || 'unknown'}\n` +
    `node ${process.version}, webgpu ${JSON.parse(readFileSync(path.join(webgpuDir, 'package.json'), 'utf8')).version}\n` +
    `usage: ./run.sh [--out DIR] [--smoke]   (docs/gpu.md in the repository)\n`,
);

// 7. Size check and listing.
function walk(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)],
  );
}
const files = walk(out).map((f) => ({ file: path.relative(out, f), bytes: statSync(f).size }));
const total = files.reduce((n, f) => n + f.bytes, 0);
for (const f of files.filter((x) => x.bytes > 256 * 1024).sort((a, b) => b.bytes - a.bytes)) {
  log(`  ${(f.bytes / 2 ** 20).toFixed(1).padStart(6)} MiB  ${f.file}`);
}
log(
  `${out}: ${files.length} files, ${(total / 2 ** 20).toFixed(1)} MiB in ${((Date.now() - started) / 1000).toFixed(1)} s`,
);
if (total > MAX_BYTES)
  fail(`the bundle is ${(total / 2 ** 20).toFixed(1)} MiB, over the 60 MiB limit`);
