/**
 * Next-token choice from one row of logits, on the host in float64: greedy, temperature and
 * nucleus (top-p, Holtzman et al. 2020) sampling with a seeded generator, so a generation is
 * reproducible from its seed. Semantics follow transformers' `TemperatureLogitsWarper` and
 * `TopPLogitsWarper` (keep the smallest set of most likely tokens whose mass reaches p, at
 * least one token).
 */
import { SeededRandom } from '../util/rng.util';

export interface SamplingOptions {
  /** 0 (default) = greedy. */
  temperature?: number;
  /** Nucleus mass in (0, 1]; 1 (default) = no truncation. */
  topP?: number;
}

/** Index of the largest logit; ties go to the lowest index (as torch.argmax). */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/** Probabilities after temperature and top-p, as (token, probability) pairs summing to 1. */
export function samplingDistribution(
  logits: ArrayLike<number>,
  temperature: number,
  topP: number,
): { tokens: number[]; probs: number[] } {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  const weights = new Float64Array(logits.length);
  let total = 0;
  for (let i = 0; i < logits.length; i++) {
    weights[i] = Math.exp((logits[i] - max) / temperature);
    total += weights[i];
  }
  const tokens = Array.from({ length: logits.length }, (_, i) => i);
  // Stable sort by probability, descending; equal probabilities keep token order.
  tokens.sort((a, b) => weights[b] - weights[a] || a - b);
  const kept: number[] = [];
  const probs: number[] = [];
  let mass = 0;
  for (const token of tokens) {
    if (kept.length > 0 && mass >= topP) break;
    const p = weights[token] / total;
    kept.push(token);
    probs.push(p);
    mass += p;
  }
  return { tokens: kept, probs: probs.map((p) => p / mass) };
}

export function sampleToken(
  logits: ArrayLike<number>,
  options: SamplingOptions,
  rng: SeededRandom,
): number {
  const temperature = options.temperature ?? 0;
  const topP = options.topP ?? 1;
  if (!(temperature >= 0) || !Number.isFinite(temperature)) {
    throw new RangeError(`temperature must be >= 0 (got ${temperature})`);
  }
  if (!(topP > 0 && topP <= 1)) throw new RangeError(`topP must be in (0, 1] (got ${topP})`);
  if (temperature === 0) return argmax(logits);
  const { tokens, probs } = samplingDistribution(logits, temperature, topP);
  const u = rng.next();
  let cumulative = 0;
  for (let i = 0; i < tokens.length; i++) {
    cumulative += probs[i];
    if (u < cumulative) return tokens[i];
  }
  return tokens[tokens.length - 1];
}
