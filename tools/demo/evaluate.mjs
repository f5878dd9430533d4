#!/usr/bin/env node
// @ts-check
// The demo's evaluation: greedy decoding with lora-core on a base model, with or without a
// PEFT adapter, scored by the task's metrics (tools/demo/tasks.mjs): accuracy and the chance
// level for `authorship`, exact match and phoneme error rate (PER) for `g2p`.
//
//   node tools/demo/evaluate.mjs --model-dir models/lorafleet-tiny-llama [--task authorship] \
//        [--adapter <peft-dir>] [--fewshot demo/<task>/fewshot.json] \
//        [--data demo/<task>/test.jsonl] [--limit N] [--shard k/n] [--out result.json] [--backend auto]
//
// --shard k/n keeps rows k, k+n, k+2n, … (of the first --limit), so n processes can share the
// work on n cores; mergeResults() puts their outputs back together.
//
// The protocol matches tools/pretrain/g2p_eval.py (the PyTorch reference) and the data cards in
// demo/: the prompt is `prefix + row.prompt` (prefix = the 5 solved training examples of
// fewshot.json for the base-model baseline, empty for the adapter), BOS only when the
// tokenizer adds one (as training does), greedy decoding that stops at the first token whose
// text holds a newline, or at EOS; the prediction is the text before the first newline,
// trimmed, and it is compared with the reference word by word.
//
// Needs the built libs (npm run build): it loads @lorafleet/lora-core and @lorafleet/data
// from their dist/ folders.
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { taskNamed } from './tasks.mjs';

const require = createRequire(import.meta.url);

/** @typedef {{ prompt: string, completion: string }} Row */

/** @param {string} path @returns {Row[]} */
export function readJsonl(path) {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line));
}

/**
 * Combines the results of `--shard k/n` runs (in any order) into one result over all rows,
 * examples back in their original order.
 */
export function mergeResults(parts) {
  if (parts.length === 1) return parts[0];
  const shards = parts.map((p) => p.shard ?? { index: 0, count: 1 });
  const count = shards[0].count;
  const examples = new Array(parts.reduce((sum, p) => sum + p.examples.length, 0));
  parts.forEach((p, i) =>
    p.examples.forEach((e, j) => (examples[shards[i].index + j * count] = e)),
  );
  // Re-scored from the merged predictions: every metric comes out as over one run.
  const merged = taskNamed(parts[0].task).score(
    examples.map((e) => e.prediction),
    examples.map((e) => e.reference),
  );
  return {
    ...parts[0],
    ...merged,
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
 * Loads the base model (and the adapter, if given) once, decodes every row and scores the
 * predictions with the task's metrics.
 * @param {{ task: string, modelDir: string, adapterDir?: string | null, rows: Row[], prefix?: string,
 *           backend?: string, maxNewTokens?: number,
 *           onProgress?: (done: number, total: number) => void }} options
 */
export async function evaluate(options) {
  const task = taskNamed(options.task);
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
    task: task.name,
    ...task.score(predictions, references),
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
      'Usage: node tools/demo/evaluate.mjs --model-dir <dir> [--task authorship|g2p] [--adapter <dir>]\n' +
        '         [--fewshot <fewshot.json>] [--data <test.jsonl>] [--limit N] [--shard k/n] [--out <result.json>] [--backend auto]',
    );
    process.exit(args.help ? 0 : 2);
  }
  const root = resolve(fileURLToPath(import.meta.url), '../../..');
  const task = taskNamed(args.task ?? 'authorship');
  let rows = readJsonl(args.data ?? resolve(root, task.dataDir, 'test.jsonl'));
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
  const result = await evaluate({
    task: task.name,
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
      console.error(`evaluate: ${error instanceof Error ? error.stack : String(error)}`);
      process.exit(1);
    },
  );
}
