#!/usr/bin/env node
// @ts-check
// Grapheme-to-phoneme evaluation for the demo: greedy decoding with lora-core on a base model,
// with or without a PEFT adapter, scored by exact match and phoneme error rate (PER).
//
//   node tools/demo/g2p-eval.mjs --model-dir models/lorafleet-tiny-llama \
//        [--adapter <peft-dir>] [--fewshot demo/g2p/fewshot.json] \
//        [--data demo/g2p/test.jsonl] [--limit N] [--shard k/n] [--out result.json] [--backend auto]
//
// --shard k/n keeps rows k, k+n, k+2n, … (of the first --limit), so n processes can share the
// work on n cores; mergeResults() puts their outputs back together.
//
// The protocol matches tools/pretrain/g2p_eval.py (the PyTorch reference) and the data card in
// demo/g2p: the prompt is `prefix + row.prompt` (prefix = the 5 solved training examples of
// fewshot.json for the base-model baseline, empty for the adapter), BOS only when the
// tokenizer adds one (as training does), greedy decoding that stops at the first token whose
// text holds a newline, or at EOS; the prediction is the text before the first newline,
// trimmed. Exact match compares phoneme sequences; PER = total edit distance (insertions,
// deletions, substitutions over phonemes) / total reference phonemes.
//
// Needs the built libs (npm run build): it loads @lorafleet/lora-core and @lorafleet/data
// from their dist/ folders.
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

/** @typedef {{ prompt: string, completion: string }} Row */
/** @typedef {{ exact_match: number, per: number, n: number, edits: number, ref_phonemes: number }} Score */

/** @param {string} path @returns {Row[]} */
export function readJsonl(path) {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line));
}

/** Levenshtein distance over two token sequences. @param {string[]} a @param {string[]} b */
export function editDistance(a, b) {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur.push(
        Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1)),
      );
    }
    prev = cur;
  }
  return prev[b.length];
}

/** @param {string} s */
const phonemes = (s) => s.trim().split(/\s+/).filter(Boolean);

/** @param {string[]} predictions @param {string[]} references @returns {Score} */
export function score(predictions, references) {
  let exact = 0;
  let edits = 0;
  let total = 0;
  predictions.forEach((pred, i) => {
    const p = phonemes(pred);
    const r = phonemes(references[i]);
    if (p.length === r.length && p.every((x, k) => x === r[k])) exact++;
    edits += editDistance(p, r);
    total += r.length;
  });
  const n = references.length;
  return {
    exact_match: n ? exact / n : 0,
    per: total ? edits / total : 0,
    n,
    edits,
    ref_phonemes: total,
  };
}

/**
 * Combines the results of `--shard k/n` runs (in any order) into one result over all rows,
 * examples back in their original order.
 */
export function mergeResults(parts) {
  if (parts.length === 1) return parts[0];
  const n = parts.reduce((sum, p) => sum + p.n, 0);
  const exact = parts.reduce((sum, p) => sum + Math.round(p.exact_match * p.n), 0);
  const edits = parts.reduce((sum, p) => sum + p.edits, 0);
  const refPhonemes = parts.reduce((sum, p) => sum + p.ref_phonemes, 0);
  const shards = parts.map((p) => p.shard ?? { index: 0, count: 1 });
  const count = shards[0].count;
  const examples = new Array(n);
  parts.forEach((p, i) =>
    p.examples.forEach((e, j) => (examples[shards[i].index + j * count] = e)),
  );
  return {
    ...parts[0],
    exact_match: n ? exact / n : 0,
    per: refPhonemes ? edits / refPhonemes : 0,
    n,
    edits,
    ref_phonemes: refPhonemes,
    shard: null,
    load_seconds: Math.max(...parts.map((p) => p.load_seconds)),
    decode_seconds: Math.max(...parts.map((p) => p.decode_seconds)),
    generated_tokens: parts.reduce((sum, p) => sum + p.generated_tokens, 0),
    examples,
  };
}

/** Ids whose decoded text contains a newline: decoding stops on any of them. */
function newlineTokenIds(tokenizer) {
  const ids = [];
  for (let id = 0; id < tokenizer.vocabSize; id++) {
    let text;
    try {
      text = tokenizer.decode([id]);
    } catch {
      continue;
    }
    if (text.includes('\n')) ids.push(id);
  }
  return ids;
}

/**
 * Loads the base model (and the adapter, if given) once and decodes every row.
 * @param {{ modelDir: string, adapterDir?: string | null, rows: Row[], prefix?: string,
 *           backend?: string, maxNewTokens?: number,
 *           onProgress?: (done: number, total: number) => void }} options
 */
export async function evaluateG2p(options) {
  const core = require('@lorafleet/lora-core');
  const data = require('@lorafleet/data');
  const backend = await core.selectBackend(options.backend ?? 'auto');
  const started = performance.now();
  const tokenizer = await data.loadTokenizer(options.modelDir);
  const model = await core.loadCausalLM(options.modelDir);
  let adapter = null;
  if (options.adapterDir) {
    await core.loadPeftAdapter(model, 'demo', options.adapterDir);
    adapter = 'demo';
  }
  const loadSeconds = (performance.now() - started) / 1000;
  const stopTokenIds = [...newlineTokenIds(tokenizer)];
  if (tokenizer.eosTokenId !== undefined) stopTokenIds.push(tokenizer.eosTokenId);
  const longest = Math.max(...options.rows.map((r) => tokenizer.encode(r.completion).length));
  const maxNewTokens = options.maxNewTokens ?? longest + 4;
  const prefix = options.prefix ?? '';
  const predictions = [];
  let generated = 0;
  const decodeStart = performance.now();
  try {
    for (const row of options.rows) {
      const result = await core.generateText(model, tokenizer, prefix + row.prompt, {
        maxNewTokens,
        stopTokenIds,
        adapter,
      });
      generated += result.tokenIds.length;
      predictions.push(result.text.split('\n')[0].trim());
      options.onProgress?.(predictions.length, options.rows.length);
    }
  } finally {
    model.dispose();
  }
  const references = options.rows.map((r) => r.completion.trim());
  return {
    ...score(predictions, references),
    backend,
    adapter: options.adapterDir ?? null,
    shots: prefix ? (prefix.match(/\n\n/g) ?? []).length : 0,
    load_seconds: round(loadSeconds),
    decode_seconds: round((performance.now() - decodeStart) / 1000),
    generated_tokens: generated,
    examples: options.rows.map((r, i) => ({
      prompt: r.prompt,
      reference: references[i],
      prediction: predictions[i],
    })),
  };
}

/** @param {number} x */
const round = (x) => Math.round(x * 100) / 100;

function parseArgs(argv) {
  /** @type {Record<string, string>} */
  const args = {};
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i];
    if (!key.startsWith('--')) throw new Error(`unexpected argument "${key}"`);
    if (key === '--help') return { help: 'true' };
    const value = argv[i + 1];
    if (value === undefined || value.startsWith('--')) throw new Error(`${key} needs a value`);
    args[key.slice(2)] = value;
    i++;
  }
  return args;
}

async function cli() {
  const args = parseArgs(process.argv.slice(2));
  if (args.help || !args['model-dir']) {
    console.log(
      'Usage: node tools/demo/g2p-eval.mjs --model-dir <dir> [--adapter <dir>] [--fewshot <fewshot.json>]\n' +
        '         [--data <test.jsonl>] [--limit N] [--shard k/n] [--out <result.json>] [--backend auto]',
    );
    process.exit(args.help ? 0 : 2);
  }
  const root = resolve(fileURLToPath(import.meta.url), '../../..');
  let rows = readJsonl(args.data ?? resolve(root, 'demo/g2p/test.jsonl'));
  if (args.limit) rows = rows.slice(0, Number(args.limit));
  let shard = null;
  if (args.shard) {
    const match = /^(\d+)\/(\d+)$/.exec(args.shard);
    if (!match || Number(match[1]) >= Number(match[2]))
      throw new Error('--shard must be k/n with k < n');
    shard = { index: Number(match[1]), count: Number(match[2]) };
    rows = rows.filter((_, i) => i % shard.count === shard.index);
  }
  const prefix = args.fewshot ? JSON.parse(readFileSync(args.fewshot, 'utf8')).prefix : '';
  let lastReport = 0;
  const result = await evaluateG2p({
    modelDir: args['model-dir'],
    adapterDir: args.adapter ?? null,
    rows,
    prefix,
    backend: args.backend,
    onProgress: (done, total) => {
      // Machine-readable progress for the demo orchestrator, at most every 2 s.
      if (process.send && (Date.now() - lastReport > 2000 || done === total)) {
        lastReport = Date.now();
        process.send({ kind: 'progress', done, total });
      }
    },
  });
  const text = JSON.stringify({ ...result, shard }, null, 2);
  if (args.out) writeFileSync(args.out, `${text}\n`);
  else console.log(text);
  if (process.send) process.send({ kind: 'result' });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  cli().then(
    () => process.exit(0),
    (error) => {
      console.error(`g2p-eval: ${error instanceof Error ? error.stack : String(error)}`);
      process.exit(1);
    },
  );
}
