#!/usr/bin/env node
// Runs a TypeScript benchmark from tools/bench without a build: esbuild bundles it (and
// @lorafleet/* from source, through the tsconfig paths) into node_modules/.cache, then it
// runs in this process. Usage: node tools/bench/run.mjs <bench-name> [args...]
import { build } from 'esbuild';
import { createRequire } from 'node:module';
import path from 'node:path';

const [name, ...args] = process.argv.slice(2);
if (!name) {
  console.error('usage: node tools/bench/run.mjs <bench-name> [args...]');
  process.exit(2);
}
const root = path.join(import.meta.dirname, '..', '..');
const outfile = path.join(root, 'node_modules', '.cache', 'lorafleet-bench', `${name}.cjs`);
await build({
  entryPoints: [path.join(root, 'tools', 'bench', `${name}.ts`)],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  packages: 'external',
  tsconfig: path.join(root, 'tsconfig.base.json'),
  logLevel: 'error',
});
process.argv = [process.argv[0], outfile, ...args];
createRequire(import.meta.url)(outfile);
