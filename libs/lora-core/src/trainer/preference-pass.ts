/**
 * The trainer's DPO passes (issue 20): one optimizer step's forward and backward over
 * micro-batches of preference pairs, and the validation pass over pairs. The loss, the
 * reference policy (the same model with the adapter switched off) and the rewards are
 * train/dpo.loss.ts; this module only applies them to the trainer's data order.
 *
 * A step's micro-batches each contribute Σ pair losses / (pairs of the whole accumulation
 * group), so the summed gradients are the big batch's gradient of the mean pair loss, as the
 * supervised pass divides by the group's target tokens.
 */
import * as tf from '@tensorflow/tfjs';
import { buildBatch, type PreferenceBatch } from '@lorafleet/data';

import type { CausalLM } from '../models/causal-lm.model';
import {
  buildDpoRows,
  combineDpoMetrics,
  disposeDpoRows,
  dpoPairTerms,
  dpoStep,
  sequenceLogProbs,
  type DpoMetrics,
} from '../train/dpo.loss';
import { yieldToEventLoop } from '../util/event-loop.util';
import { deriveSeed } from '../util/rng.util';
import { hashSequences, type TokenizedSequence } from './data-order';
import { countTargets } from './micro-batch';
import type { DpoRewardMetrics, EvalMetrics } from './trainer.types';

/** One tokenized preference pair (libs/data `tokenizePreferencePair` output fits). */
export interface TokenizedPair {
  chosen: TokenizedSequence;
  rejected: TokenizedSequence;
}

/** sha256 over both sides of every pair, in pair order: what DPO training actually sees. */
export function hashPairs(pairs: readonly TokenizedPair[]): string {
  return hashSequences(pairs.flatMap((pair) => [pair.chosen, pair.rejected]));
}

/** The reward metrics of a {@link DpoMetrics} (loss and log-probs are reported elsewhere). */
export function rewardMetrics(metrics: DpoMetrics): DpoRewardMetrics {
  return {
    rewardsChosen: metrics.rewardsChosen,
    rewardsRejected: metrics.rewardsRejected,
    rewardsMargin: metrics.margin,
    rewardsAccuracy: metrics.accuracy,
  };
}

function pairBatch(
  pairs: readonly TokenizedPair[],
  indices: readonly number[],
  padTokenId: number,
): { batch: PreferenceBatch; tokens: number; targets: number } {
  const picked = indices.map((i) => pairs[i]);
  // libs/data `buildPreferenceBatch`'s layout: chosen rows [0, P), rejected rows [P, 2P).
  const rows = [...picked.map((p) => p.chosen), ...picked.map((p) => p.rejected)];
  const batch: PreferenceBatch = { ...buildBatch(rows, { padTokenId }), pairs: picked.length };
  const sides = picked.flatMap((pair) => [pair.chosen, pair.rejected]);
  const tokens = sides.reduce((n, side) => n + side.inputIds.length, 0);
  const targets = countTargets(
    sides,
    sides.map((_, i) => i),
  );
  return { batch, tokens, targets };
}

export interface PreferencePassOptions {
  beta: number;
  padTokenId: number;
  seed: number;
  /** The optimizer step this pass belongs to (1-based): it seeds the dropout masks. */
  stepNumber: number;
  variables: tf.Variable[];
}

export interface PreferencePass {
  /** Gradients keyed by tfjs variable name, summed over the micro-batches. */
  grads: Map<string, tf.Tensor>;
  /** Σ micro-batch losses = the group's mean pair loss, []. */
  lossSum: tf.Scalar;
  metrics: DpoMetrics;
  /** Real tokens read (both sides). */
  tokens: number;
  /** Target tokens scored (both sides). */
  targets: number;
}

/**
 * DPO forward and backward over one step's micro-batches of pair indices. Dropout masks come
 * from `deriveSeed(seed, "dropout:<step>:<micro-batch>")`, as in the supervised pass.
 */
export async function preferenceForwardBackward(
  model: CausalLM,
  pairs: readonly TokenizedPair[],
  microBatches: readonly number[][],
  options: PreferencePassOptions,
): Promise<PreferencePass> {
  const groupPairs = microBatches.reduce((n, mb) => n + mb.length, 0);
  if (groupPairs === 0) throw new Error('a training step needs at least one micro-batch');
  let grads: Map<string, tf.Tensor> | null = null;
  let lossSum: tf.Scalar | null = null;
  const parts: DpoMetrics[] = [];
  let tokens = 0;
  let targets = 0;
  try {
    for (let k = 0; k < microBatches.length; k++) {
      const micro = pairBatch(pairs, microBatches[k], options.padTokenId);
      tokens += micro.tokens;
      targets += micro.targets;
      const step = await dpoStep(model, micro.batch, {
        beta: options.beta,
        divisor: groupPairs,
        dropoutSeed: deriveSeed(options.seed, `dropout:${options.stepNumber}:${k}`),
        variables: options.variables,
      });
      parts.push(step.metrics);
      if (lossSum === null) {
        lossSum = step.loss;
      } else {
        const previous: tf.Scalar = lossSum;
        lossSum = tf.add<tf.Scalar>(previous, step.loss); // []
        previous.dispose();
        step.loss.dispose();
      }
      grads ??= new Map<string, tf.Tensor>();
      for (const [name, grad] of Object.entries(step.grads)) {
        const previous = grads.get(name);
        if (previous) {
          grads.set(name, tf.add(previous, grad)); // [param shape]
          previous.dispose();
          grad.dispose();
        } else {
          grads.set(name, grad);
        }
      }
    }
  } catch (error) {
    lossSum?.dispose();
    if (grads) for (const g of grads.values()) g.dispose();
    throw error;
  }
  return { grads: grads!, lossSum: lossSum!, metrics: combineDpoMetrics(parts), tokens, targets };
}

export interface EvaluatePairsOptions {
  beta: number;
  padTokenId: number;
  /** Pairs per forward pass. */
  batchSize: number;
  /** Evaluate only the first N pairs. */
  maxExamples?: number;
}

/**
 * Mean DPO loss and reward metrics of `model` over `pairs`: the reference (adapter off) and the
 * policy (adapter on), both without dropout and without a gradient tape. No state changes.
 */
export async function evaluatePairs(
  model: CausalLM,
  pairs: readonly TokenizedPair[],
  options: EvaluatePairsOptions,
): Promise<EvalMetrics> {
  const count = Math.min(pairs.length, options.maxExamples ?? pairs.length);
  const parts: DpoMetrics[] = [];
  let targets = 0;
  for (let start = 0; start < count; start += options.batchSize) {
    const indices = Array.from(
      { length: Math.min(options.batchSize, count - start) },
      (_, i) => start + i,
    );
    const micro = pairBatch(pairs, indices, options.padTokenId);
    targets += micro.targets;
    const rows = buildDpoRows(micro.batch, model.config.vocabSize);
    try {
      const packed = tf.tidy(() => {
        const reference = sequenceLogProbs(model, rows, { withoutAdapter: true }); // [2P]
        const policy = sequenceLogProbs(model, rows); // [2P]
        const [policyChosen, policyRejected] = tf.split<tf.Tensor1D>(policy, 2); // [P], [P]
        const [referenceChosen, referenceRejected] = tf.split<tf.Tensor1D>(reference, 2); // [P], [P]
        const terms = dpoPairTerms(
          policyChosen,
          policyRejected,
          referenceChosen,
          referenceRejected,
          options.beta,
        );
        return tf.stack([
          terms.losses,
          terms.rewardsChosen,
          terms.rewardsRejected,
          policyChosen,
          policyRejected,
        ]); // [5, P]
      });
      const values = await packed.data<'float32'>();
      packed.dispose();
      parts.push(pairMeans(values, rows.pairs));
    } finally {
      disposeDpoRows(rows);
    }
    await yieldToEventLoop();
  }
  if (parts.length === 0) {
    return { loss: Number.NaN, tokens: 0, examples: 0 };
  }
  const combined = combineDpoMetrics(parts);
  return { loss: combined.loss, dpo: rewardMetrics(combined), tokens: targets, examples: count };
}

/** Means of the [5, P] rows (losses, rewards chosen, rewards rejected, logps chosen, rejected). */
function pairMeans(values: Float32Array, pairs: number): DpoMetrics {
  const mean = (row: number) => {
    let sum = 0;
    for (let i = 0; i < pairs; i++) sum += values[row * pairs + i];
    return sum / pairs;
  };
  let wins = 0;
  for (let i = 0; i < pairs; i++) if (values[pairs + i] > values[2 * pairs + i]) wins += 1;
  return {
    pairs,
    loss: mean(0),
    rewardsChosen: mean(1),
    rewardsRejected: mean(2),
    margin: mean(1) - mean(2),
    accuracy: wins / pairs,
    logpsChosen: mean(3),
    logpsRejected: mean(4),
  };
}
