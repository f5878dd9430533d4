#!/usr/bin/env node
// `npm run openapi`: writes docs/openapi.json from the built API (apps/api/dist). The document
// itself is built by apps/api/src/ops/openapi.document.ts, the one source that also serves
// /docs/openapi.json; apps/api/test/ops.spec.ts fails when the committed file drifts.
//   npm run openapi            build the api, then write docs/openapi.json
//   npm run openapi -- --check exit 1 (and write nothing) when docs/openapi.json is stale
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const require = createRequire(import.meta.url);
const { renderOpenApiJson } = require(path.join(root, 'apps/api/dist/ops/openapi.document.js'));

const target = path.join(root, 'docs/openapi.json');
const next = renderOpenApiJson();
let current = '';
try {
  current = readFileSync(target, 'utf8');
} catch {
  // first run: no file yet
}
if (process.argv.includes('--check')) {
  if (current !== next) {
    console.error('docs/openapi.json is stale: run `npm run openapi` and commit the result');
    process.exit(1);
  }
  console.log('docs/openapi.json is up to date');
} else if (current === next) {
  console.log('docs/openapi.json is up to date');
} else {
  writeFileSync(target, next);
  console.log(`wrote docs/openapi.json (${next.length} bytes)`);
}
