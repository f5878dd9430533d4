/**
 * Direct Preference Optimization (Rafailov et al. 2023, https://arxiv.org/abs/2305.18290), the
 * sigmoid loss as TRL's `DPOTrainer` computes it (`loss_type="sigmoid"`, no label smoothing):
 *
 *   z    = (log π(y_w|x) − log π(y_l|x)) − (log π_ref(y_w|x) − log π_ref(y_l|x))
 *   loss = −log σ(β·z)                                       (mean over pairs)
 *
 * where log π(y|x) is the completion's sequence log-probability: −Σ of the per-token
 * cross-entropy over its scored tokens (libs/data's loss mask), through the fused LM head
 * (`CausalLM.forwardRowLosses`). With LoRA the reference policy π_ref is the same model with
 * the adapter's branch skipped (`withoutAdapter`, one call, no second copy of the model), run
 * without a gradient tape. Rewards are β·(log π − log π_ref) per side, as in TRL's metrics.
 *
 * Batches come from libs/data's `buildPreferenceBatch`: `2P` rows, chosen in `[0, P)`,
 * rejected in `[P, 2P)`, so one forward pass scores both sides.
 */
import * as tf from '@tensorflow/tfjs';
import type { PreferenceBatch } from '@lorafleet/data';

import type { CausalLM, ForwardOptions } from '../models/causal-lm.model';
import { shiftTargets, type ShiftedTargets } from '../trainer/token-loss';

/** β of OpenAI's `method.dpo.hyperparameters.beta` and TRL's `DPOConfig.beta` when unset. */
export const DEFAULT_DPO_BETA = 0.1;

/** Sequence log-probabilities of a batch's pairs, each [P] in pair order. */
export interface PairLogProbs {
  chosen: Float32Array;
  rejected: Float32Array;
}

/**
 * Means over a micro-batch's pairs of TRL's DPO metrics. A step over several micro-batches
 * combines them with {@link combineDpoMetrics}.
 */
export interface DpoMetrics {
  pairs: number;
  /** −log σ(β·z). */
  loss: number;
  /** β·(log π − log π_ref) of the chosen completions. */
  rewardsChosen: number;
  /** β·(log π − log π_ref) of the rejected completions. */
  rewardsRejected: number;
  /** rewardsChosen − rewardsRejected. */
  margin: number;
  /** Share of pairs whose chosen reward exceeds the rejected one. */
  accuracy: number;
  /** Policy sequence log-probabilities. */
  logpsChosen: number;
  logpsRejected: number;
}

/** The per-pair loss and rewards, [P] each, differentiable in the policy log-probs. */
export interface DpoPairTerms {
  losses: tf.Tensor1D;
  rewardsChosen: tf.Tensor1D;
  rewardsRejected: tf.Tensor1D;
}

/** −log σ(β·z) per pair, and the rewards; every argument is [P]. */
export function dpoPairTerms(
  policyChosen: tf.Tensor1D,
  policyRejected: tf.Tensor1D,
  referenceChosen: tf.Tensor1D,
  referenceRejected: tf.Tensor1D,
  beta: number,
): DpoPairTerms {
  checkBeta(beta);
  const chosenRatio = tf.sub<tf.Tensor1D>(policyChosen, referenceChosen); // [P]
  const rejectedRatio = tf.sub<tf.Tensor1D>(policyRejected, referenceRejected); // [P]
  const z = tf.sub<tf.Tensor1D>(chosenRatio, rejectedRatio); // [P]
  return {
    // −log σ(x) = softplus(−x), stable for large |x| in both directions.
    losses: tf.softplus(tf.mul<tf.Tensor1D>(z, -beta)), // [P]
    rewardsChosen: tf.mul<tf.Tensor1D>(chosenRatio, beta), // [P]
    rewardsRejected: tf.mul<tf.Tensor1D>(rejectedRatio, beta), // [P]
  };
}

/** A preference batch as tensors plus per-row shifted targets. Dispose with {@link disposeDpoRows}. */
export interface DpoRows {
  inputIds: tf.Tensor2D; // [2P, T] int32
  /** [2P, T], or null when no row is padded (the cheaper [1, 1, T, T] attention bias). */
  attentionMask: tf.Tensor2D | null;
  /** One `shiftTargets` per row: each row's sequence log-prob is read on its own. */
  rows: ShiftedTargets[];
  pairs: number;
}

export function buildDpoRows(batch: PreferenceBatch, vocabSize: number): DpoRows {
  const { pairs, inputIds, attentionMask, lossMask } = batch;
  if (!Number.isInteger(pairs) || pairs < 1 || inputIds.length !== 2 * pairs) {
    throw new RangeError(`a preference batch needs 2 × ${pairs} rows, got ${inputIds.length}`);
  }
  const length = inputIds[0].length;
  const padded = attentionMask.some((row) => row.some((m) => m === 0));
  return {
    inputIds: tf.tensor2d(inputIds, [2 * pairs, length], 'int32'), // [2P, T]
    attentionMask: padded ? tf.tensor2d(attentionMask, [2 * pairs, length]) : null, // [2P, T]
    rows: inputIds.map((ids, b) => shiftTargets([ids], [lossMask[b]], vocabSize)),
    pairs,
  };
}

export function disposeDpoRows(rows: DpoRows): void {
  rows.inputIds.dispose();
  rows.attentionMask?.dispose();
}

/** Sequence log-probs of every row, [2P]: −Σ w·NLL per row through the fused head. */
export function sequenceLogProbs(
  model: CausalLM,
  rows: DpoRows,
  opts: ForwardOptions = {},
): tf.Tensor1D {
  const { nll } = model.forwardRowLosses(
    rows.inputIds,
    rows.attentionMask ?? undefined,
    rows.rows,
    opts,
  ); // [2P]
  return tf.neg(nll);
}

/**
 * The reference policy's log-probs: the base model (adapter branch skipped for this call
 * only), no dropout, outside any gradient tape, so nothing of it reaches the gradients. The
 * values depend on the batch alone, so a trainer may compute them once per example and cache
 * them (TRL's `precompute_ref_log_probs`).
 */
export async function referenceLogProbs(model: CausalLM, rows: DpoRows): Promise<PairLogProbs> {
  const logps = tf.tidy(() => sequenceLogProbs(model, rows, { withoutAdapter: true })); // [2P]
  const values = new Float32Array(await logps.data<'float32'>());
  logps.dispose();
  return { chosen: values.slice(0, rows.pairs), rejected: values.slice(rows.pairs) };
}

export interface DpoStepOptions {
  /** β, the strength of the pull toward the reference policy. Default {@link DEFAULT_DPO_BETA}. */
  beta?: number;
  /**
   * Pairs of the whole accumulation group: the returned loss is Σ pair losses / divisor, so
   * the gradients of a group's micro-batches add up to the big batch's. Default: this batch's.
   */
  divisor?: number;
  /** Seed of this micro-batch's adapter dropout masks (the trainer derives it from the step). */
  dropoutSeed?: number;
  /** Cached reference log-probs of this batch; computed here when absent. */
  reference?: PairLogProbs;
  /** Variables to differentiate. Default: the model's trainable variables (the active adapter). */
  variables?: tf.Variable[];
}

export interface DpoStepResult {
  /** Σ pair losses / divisor, []. The caller disposes it. */
  loss: tf.Scalar;
  /** Gradients of `loss`, keyed by tfjs variable name as `tf.variableGrads` returns them. */
  grads: tf.NamedTensorMap;
  metrics: DpoMetrics;
}

/**
 * One DPO forward and backward on a micro-batch: reference log-probs (unless given), then the
 * policy pass with the adapter and dropout under `tf.variableGrads`. The optimizer step, clipping
 * and accumulation stay the trainer's, as for SFT.
 */
export async function dpoStep(
  model: CausalLM,
  batch: PreferenceBatch,
  options: DpoStepOptions = {},
): Promise<DpoStepResult> {
  const beta = options.beta ?? DEFAULT_DPO_BETA;
  checkBeta(beta);
  const divisor = options.divisor ?? batch.pairs;
  if (!(divisor > 0)) throw new RangeError(`divisor must be positive, got ${divisor}`);
  const rows = buildDpoRows(batch, model.config.vocabSize);
  const kept: tf.Tensor[] = [];
  try {
    const reference = options.reference ?? (await referenceLogProbs(model, rows));
    checkReference(reference, rows.pairs);
    const variables = options.variables ?? model.trainableVariables();
    const { value, grads } = tf.variableGrads(() => {
      const policy = sequenceLogProbs(model, rows, {
        training: true,
        dropoutSeed: options.dropoutSeed,
      }); // [2P]
      const [chosen, rejected] = tf.split<tf.Tensor1D>(policy, 2); // [P], [P]
      const terms = dpoPairTerms(
        chosen,
        rejected,
        tf.tensor1d(reference.chosen),
        tf.tensor1d(reference.rejected),
        beta,
      );
      // Kept past variableGrads' scope for the metrics; disposed below.
      kept.push(
        tf.keep(
          tf.stack([terms.losses, terms.rewardsChosen, terms.rewardsRejected, chosen, rejected]),
        ),
      ); // [5, P]
      return tf.div<tf.Scalar>(tf.sum(terms.losses), divisor); // []
    }, variables);
    try {
      const metrics = pairMetrics(await kept[0].data<'float32'>(), rows.pairs);
      return { loss: value, grads, metrics };
    } catch (error) {
      // A failed read (e.g. a lost webgpu device) must not strand the gradients.
      value.dispose();
      tf.dispose(Object.values(grads));
      throw error;
    }
  } finally {
    tf.dispose(kept);
    disposeDpoRows(rows);
  }
}

/** Means of the [5, P] rows (losses, rewards chosen, rewards rejected, logps chosen, rejected). */
function pairMetrics(values: Float32Array, pairs: number): DpoMetrics {
  const mean = (row: number) => {
    let sum = 0;
    for (let i = 0; i < pairs; i++) sum += values[row * pairs + i];
    return sum / pairs;
  };
  let wins = 0;
  for (let i = 0; i < pairs; i++) if (values[pairs + i] > values[2 * pairs + i]) wins += 1;
  const rewardsChosen = mean(1);
  const rewardsRejected = mean(2);
  return {
    pairs,
    loss: mean(0),
    rewardsChosen,
    rewardsRejected,
    margin: rewardsChosen - rewardsRejected,
    accuracy: wins / pairs,
    logpsChosen: mean(3),
    logpsRejected: mean(4),
  };
}

/** Pair-weighted means of micro-batch metrics: the metrics of their union. */
export function combineDpoMetrics(parts: readonly DpoMetrics[]): DpoMetrics {
  const pairs = parts.reduce((n, p) => n + p.pairs, 0);
  if (pairs === 0) throw new RangeError('combineDpoMetrics needs at least one pair');
  const mean = (key: Exclude<keyof DpoMetrics, 'pairs'>) =>
    parts.reduce((s, p) => s + p[key] * p.pairs, 0) / pairs;
  return {
    pairs,
    loss: mean('loss'),
    rewardsChosen: mean('rewardsChosen'),
    rewardsRejected: mean('rewardsRejected'),
    margin: mean('margin'),
    accuracy: mean('accuracy'),
    logpsChosen: mean('logpsChosen'),
    logpsRejected: mean('logpsRejected'),
  };
}

function checkBeta(beta: number): void {
  if (!(Number.isFinite(beta) && beta > 0)) {
    throw new RangeError(`DPO beta must be a positive number, got ${beta}`);
  }
}

function checkReference(reference: PairLogProbs, pairs: number): void {
  if (reference.chosen.length !== pairs || reference.rejected.length !== pairs) {
    throw new RangeError(
      `reference log-probs cover ${reference.chosen.length}/${reference.rejected.length} pairs, the batch has ${pairs}`,
    );
  }
}
