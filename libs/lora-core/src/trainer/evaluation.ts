/**
 * Evaluation around the training loop: the validation pass (mean token loss and accuracy),
 * the best-so-far bookkeeping that early stopping acts on, and the sample generations a
 * finished run reports. No state of the loop is changed here.
 */
import * as tf from '@tensorflow/tfjs';

import { buildGenerationPrompt, type TextTokenizer, type TrainingExample } from '@lorafleet/data';

import { generateTokens } from '../generation/generate';
import type { CausalLM } from '../models/causal-lm.model';
import { sequenceLimit } from '../models/model.config';
import { yieldToEventLoop } from '../util/event-loop.util';
import type { TokenizedSequence } from './data-order';
import { buildMicroBatch, disposeMicroBatch } from './micro-batch';
import type { TokenEvalMetrics } from './trainer.types';

export interface EvaluateOptions {
  padTokenId: number;
  batchSize: number;
  /** Evaluate only the first N examples. */
  maxExamples?: number;
}

/** Mean next-token loss and token accuracy of `model` over target tokens of `examples`. */
export async function evaluateSequences(
  model: CausalLM,
  examples: readonly TokenizedSequence[],
  options: EvaluateOptions,
): Promise<TokenEvalMetrics> {
  const count = Math.min(examples.length, options.maxExamples ?? examples.length);
  const vocab = model.config.vocabSize;
  let totals = tf.zeros([2]); // [2]: Σ NLL, Σ correct
  let targets = 0;
  for (let start = 0; start < count; start += options.batchSize) {
    const indices = Array.from(
      { length: Math.min(options.batchSize, count - start) },
      (_, i) => start + i,
    );
    const batch = buildMicroBatch(examples, indices, options.padTokenId, vocab);
    targets += batch.shifted.count;
    const next = tf.tidy(() => {
      const { nll, correct } = model.forwardLoss(
        batch.inputIds,
        batch.attentionMask ?? undefined,
        batch.shifted,
      ); // [], []
      return tf.add(totals, tf.stack([nll, correct])); // [2]
    });
    totals.dispose();
    totals = next;
    disposeMicroBatch(batch);
    // Evaluation of a large set can take a while; keep the event loop responsive.
    await yieldToEventLoop();
  }
  const [nll, correct] = await totals.data();
  totals.dispose();
  return {
    loss: targets > 0 ? nll / targets : Number.NaN,
    meanTokenAccuracy: targets > 0 ? correct / targets : Number.NaN,
    tokens: targets,
    examples: count,
  };
}

/** The best validation so far: what early stopping counts from and restores at the end. */
export interface BestValidation {
  validLoss: number | null;
  step: number | null;
  evalsWithoutImprovement: number;
  /** Host copy of the trainable values at `step`; kept only with early stopping. */
  params: Map<string, Float32Array> | null;
}

export function noValidationYet(): BestValidation {
  return { validLoss: null, step: null, evalsWithoutImprovement: 0, params: null };
}

/**
 * Records one validation loss at `step`. Returns true when it beats the best so far by more
 * than `minDelta` (the caller then snapshots the values if it keeps them); otherwise counts
 * one more evaluation without improvement.
 */
export function recordValidation(
  best: BestValidation,
  loss: number,
  step: number,
  minDelta: number,
): boolean {
  const isBest = best.validLoss === null || loss < best.validLoss - minDelta;
  if (isBest) {
    best.validLoss = loss;
    best.step = step;
    best.evalsWithoutImprovement = 0;
  } else {
    best.evalsWithoutImprovement += 1;
  }
  return isBest;
}

export interface SampleGeneration {
  prompt: string;
  reference: string;
  completion: string;
  finishReason: 'stop' | 'length';
}

export interface SampleOptions {
  maxNewTokens: number;
  seed: number;
  /** The adapter to generate with. */
  adapter: string;
}

/**
 * Greedy completions of the examples' prompts with the trained adapter, beside the reference
 * completions: a quick look at what the run learned.
 */
export async function generateSamples(
  model: CausalLM,
  tokenizer: TextTokenizer,
  examples: readonly TrainingExample[],
  options: SampleOptions,
): Promise<SampleGeneration[]> {
  const samples: SampleGeneration[] = [];
  const limit = sequenceLimit(model.config);
  for (const example of examples) {
    const { promptIds, reference } = buildGenerationPrompt(example, tokenizer);
    // Keep the prompt's tail when prompt + completion would not fit the positions.
    const kept = promptIds.slice(
      Math.max(0, promptIds.length - Math.max(1, limit - options.maxNewTokens)),
    );
    if (kept.length === 0) continue;
    const generated = await generateTokens(model, kept, {
      maxNewTokens: Math.min(options.maxNewTokens, limit - kept.length),
      seed: options.seed,
      stopTokenIds: tokenizer.stopTokenIds,
      adapter: options.adapter,
    });
    samples.push({
      prompt: tokenizer.decode(kept),
      reference,
      completion: tokenizer.decode(generated.tokenIds, { skipSpecialTokens: true }),
      finishReason: generated.finishReason,
    });
  }
  return samples;
}
