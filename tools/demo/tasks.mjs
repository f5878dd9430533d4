// @ts-check
// The demo's tasks: what each one's data is, how its predictions are scored and which figure
// is its headline. `authorship` is the default (`npm run demo`); `g2p` is the second task
// (`npm run demo -- --task g2p`). Both are scored on greedy predictions (tools/demo/evaluate.mjs).

/** @typedef {{ n: number, exact_match: number, chance: number | null, [metric: string]: number | null }} Score */
/**
 * @typedef {object} Task
 * @property {string} name
 * @property {string} title what the model is asked to do, for the demo's first line
 * @property {string} dataDir the default data directory, relative to the repository root
 * @property {string} unit what one test row is ("sentences", "words")
 * @property {{ key: string, label: string, higherIsBetter: boolean }} headline the DEMO line's metric
 * @property {(predictions: string[], references: string[]) => Score} score
 * @property {(prompt: string) => string} shortInput the bit of a prompt that the example table shows
 * @property {{ key: string, label: string }[]} columns the metrics of the report's table
 * @property {(base: Score, tuned: Score) => { beaten: boolean, text: string }} verdict the
 *   report's sentence on the adapter against the 5-shot base model
 * @property {{ steps: number, learningRate: number, maxSeqLength: number }} training the demo's
 *   defaults for this task (docs/demo.md says how they were chosen)
 */

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
const words = (s) => s.trim().split(/\s+/).filter(Boolean);
/** @param {string[]} a @param {string[]} b */
const sameWords = (a, b) => a.length === b.length && a.every((x, k) => x === b[k]);

/**
 * The accuracy of always giving the most common reference answer: for a classification test
 * split, the level a model reaches without reading the input.
 * @param {string[]} references
 */
export function chanceLevel(references) {
  const counts = new Map();
  for (const r of references) counts.set(r, (counts.get(r) ?? 0) + 1);
  return references.length ? Math.max(...counts.values()) / references.length : 0;
}

/** @param {number | null} x */
export const pct = (x) => (x === null ? '—' : `${(100 * x).toFixed(1)}%`);

/** @type {Record<string, Task>} */
export const TASKS = {
  authorship: {
    name: 'authorship',
    title: 'who wrote this sentence: Melville, an early president or a modern president?',
    dataDir: 'demo/authorship',
    unit: 'sentences',
    headline: { key: 'accuracy', label: 'accuracy', higherIsBetter: true },
    score(predictions, references) {
      const correct = predictions.filter((p, i) =>
        sameWords(words(p), words(references[i])),
      ).length;
      const n = references.length;
      const accuracy = n ? correct / n : 0;
      return { n, correct, accuracy, exact_match: accuracy, chance: chanceLevel(references) };
    },
    shortInput: (prompt) => prompt.replace(/^Who wrote this\? /, '').replace(/\n.*$/s, ''),
    columns: [
      { key: 'accuracy', label: 'accuracy ↑' },
      { key: 'chance', label: 'chance level' },
    ],
    verdict: (base, tuned) => ({
      beaten: Number(tuned.accuracy) > Number(base.accuracy),
      text:
        `The adapter names the author of ${pct(tuned.accuracy)} of the sentences, the 5-shot base ` +
        `model of ${pct(base.accuracy)}; always giving the most common answer scores ${pct(tuned.chance)}.`,
    }),
    // The longest training example is 76 tokens with EOS (a 120-character sentence).
    training: { steps: 300, learningRate: 2e-3, maxSeqLength: 80 },
  },
  g2p: {
    name: 'g2p',
    title: 'grapheme-to-phoneme: spell an English word in ARPAbet phonemes',
    dataDir: 'demo/g2p',
    unit: 'words',
    headline: { key: 'per', label: 'phoneme_error_rate', higherIsBetter: false },
    score(predictions, references) {
      let correct = 0;
      let edits = 0;
      let refPhonemes = 0;
      predictions.forEach((pred, i) => {
        const p = words(pred);
        const r = words(references[i]);
        if (sameWords(p, r)) correct++;
        edits += editDistance(p, r);
        refPhonemes += r.length;
      });
      const n = references.length;
      return {
        n,
        correct,
        exact_match: n ? correct / n : 0,
        per: refPhonemes ? edits / refPhonemes : 0,
        edits,
        ref_phonemes: refPhonemes,
        // Open-ended output: guessing a whole pronunciation has no useful chance level.
        chance: null,
      };
    },
    shortInput: (prompt) => prompt.replace(/^.*: /, '').replace(/\n.*$/s, '').replace(/ /g, ''),
    columns: [
      { key: 'exact_match', label: 'exact match ↑' },
      { key: 'per', label: 'phoneme error rate ↓' },
    ],
    verdict: (base, tuned) => {
      const beaten = Number(tuned.per) < Number(base.per);
      return {
        beaten,
        text: beaten
          ? `The adapter makes ${pct(1 - Number(tuned.per) / Number(base.per))} fewer phoneme errors than the 5-shot base model.`
          : 'The adapter did not beat the 5-shot base model on phoneme error rate.',
      };
    },
    // 3e-3 was at the edge of stability: the final PER swung 0.58–0.83 with the seed or float
    // rounding; 2e-3 gave 0.65–0.69 (docs/demo.md). The longest example is 41 tokens.
    training: { steps: 400, learningRate: 2e-3, maxSeqLength: 64 },
  },
};

/** @param {string} name */
export function taskNamed(name) {
  const task = TASKS[name];
  if (!task) throw new Error(`unknown task "${name}" (known: ${Object.keys(TASKS).join(', ')})`);
  return task;
}
