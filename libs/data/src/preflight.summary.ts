import { encodeExample, maxExampleChars, type EncodedExample } from './example.tokenizer';
import { preferenceChats } from './preference.batch';
import type { TextTokenizer } from './text-tokenizer';
import type { PreferenceExample, TrainingExample } from './training-example.types';

export interface PreflightOptions {
  maxSeqLength: number;
  /** Examples per micro-batch. */
  batchSize: number;
  epochs: number;
  /** Micro-batches per optimizer step. Default 1. */
  gradientAccumulationSteps?: number;
}

/** The pre-flight event's numbers (DESIGN §6), computed before any training. */
export interface PreflightSummary {
  examples: number;
  /** Tokens in one epoch after truncation (what the model reads; padding excluded). */
  tokens: number;
  /** Loss targets in one epoch after truncation (completion and assistant tokens). */
  trainableTokens: number;
  /** Examples longer than `maxSeqLength` (or than its character cap), whose tails are cut. */
  truncatedExamples: number;
  /** Examples left with no target at all after truncation; they train nothing. */
  examplesWithoutTrainableTokens: number;
  /** Examples that lost at least one target (completion) token to truncation. */
  examplesWithTruncatedTargets: number;
  /** The longest sequence kept (≤ maxSeqLength): the widest micro-batch a step can see. */
  longestKeptTokens: number;
  /**
   * The longest example before truncation, to help choose `maxSeqLength`; an example past the
   * character cap (`maxExampleChars`) counts the tokens of the characters kept.
   */
  longestExampleTokens: number;
  stepsPerEpoch: number;
  totalSteps: number;
}

/**
 * Optimizer steps in one epoch: ceil(examples / batchSize) micro-batches (the last may be
 * short), grouped by `gradientAccumulationSteps`, with a final partial group still making a step
 * so every example is trained on. The trainer must count steps with this same function.
 */
export function computeStepsPerEpoch(
  examples: number,
  batchSize: number,
  gradientAccumulationSteps = 1,
): number {
  requirePositiveInteger('batchSize', batchSize);
  requirePositiveInteger('gradientAccumulationSteps', gradientAccumulationSteps);
  if (!Number.isInteger(examples) || examples < 0) {
    throw new RangeError(`examples must be a non-negative integer, got ${examples}`);
  }
  return Math.ceil(Math.ceil(examples / batchSize) / gradientAccumulationSteps);
}

/**
 * A summary of `count` examples (or pairs) before any is tokenized: the step counts the
 * trainer's schedule will use, every token count zero.
 */
function emptySummary(count: number, options: PreflightOptions): PreflightSummary {
  requirePositiveInteger('maxSeqLength', options.maxSeqLength);
  requirePositiveInteger('epochs', options.epochs);
  const stepsPerEpoch = computeStepsPerEpoch(
    count,
    options.batchSize,
    options.gradientAccumulationSteps ?? 1,
  );
  return {
    examples: count,
    tokens: 0,
    trainableTokens: 0,
    truncatedExamples: 0,
    examplesWithoutTrainableTokens: 0,
    examplesWithTruncatedTargets: 0,
    longestKeptTokens: 0,
    longestExampleTokens: 0,
    stepsPerEpoch,
    totalSteps: stepsPerEpoch * options.epochs,
  };
}

/** Tokenizes every example once and reports what a run with these settings will do. */
export function preflightSummary(
  examples: readonly TrainingExample[],
  tokenizer: TextTokenizer,
  options: PreflightOptions,
): PreflightSummary {
  const summary = emptySummary(examples.length, options);
  examples.forEach((example, index) => {
    let encoded: EncodedExample;
    try {
      // The trainer's own character cap (tokenizeExample), so both count the same tokens.
      encoded = encodeExample(example, tokenizer, {
        maxChars: maxExampleChars(options.maxSeqLength),
      });
    } catch (error) {
      const detail = error instanceof Error ? error.message : String(error);
      throw new Error(`example ${index + 1}: ${detail}`, { cause: error });
    }
    const kept = Math.min(encoded.inputIds.length, options.maxSeqLength);
    let targets = 0;
    for (let t = 0; t < kept; t += 1) targets += encoded.lossMask[t];
    let cutTargets = 0;
    for (let t = kept; t < encoded.inputIds.length; t += 1) cutTargets += encoded.lossMask[t];
    if (cutTargets > 0 || encoded.targetsCut) summary.examplesWithTruncatedTargets += 1;
    summary.longestKeptTokens = Math.max(summary.longestKeptTokens, kept);
    summary.tokens += kept;
    summary.trainableTokens += targets;
    if (encoded.inputIds.length > options.maxSeqLength || encoded.charsCut) {
      summary.truncatedExamples += 1;
    }
    if (targets === 0) summary.examplesWithoutTrainableTokens += 1;
    summary.longestExampleTokens = Math.max(summary.longestExampleTokens, encoded.inputIds.length);
  });
  return summary;
}

/**
 * The pre-flight of a DPO run, counted in pairs: `examples` is the number of pairs, and a pair
 * counts as truncated (or without trainable tokens, or with truncated targets) when either side
 * is. Tokens count both sides, each tokenized as the trainer does (prompt + completion chats,
 * {@link preferenceChats}): the DPO trainer's `trained_tokens` reads both sides of every pair in
 * its policy pass. Steps are {@link computeStepsPerEpoch} over pairs, as the trainer's schedule.
 * Pure (no tfjs): lora-core's pre-flight and the API's job estimate both call it.
 */
export function preferencePreflightSummary(
  pairs: readonly PreferenceExample[],
  tokenizer: TextTokenizer,
  options: PreflightOptions,
): PreflightSummary {
  const summary = emptySummary(pairs.length, options);
  pairs.forEach((pair, index) => {
    const chats = preferenceChats(pair);
    let sides: PreflightSummary;
    try {
      sides = preflightSummary([chats.chosen, chats.rejected], tokenizer, {
        maxSeqLength: options.maxSeqLength,
        batchSize: 1,
        epochs: 1,
      });
    } catch (error) {
      const detail = error instanceof Error ? error.message : String(error);
      throw new Error(`pair ${index + 1}: ${detail}`, { cause: error });
    }
    summary.tokens += sides.tokens;
    summary.trainableTokens += sides.trainableTokens;
    if (sides.truncatedExamples > 0) summary.truncatedExamples += 1;
    if (sides.examplesWithoutTrainableTokens > 0) summary.examplesWithoutTrainableTokens += 1;
    if (sides.examplesWithTruncatedTargets > 0) summary.examplesWithTruncatedTargets += 1;
    summary.longestKeptTokens = Math.max(summary.longestKeptTokens, sides.longestKeptTokens);
    summary.longestExampleTokens = Math.max(
      summary.longestExampleTokens,
      sides.longestExampleTokens,
    );
  });
  return summary;
}

function requirePositiveInteger(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) {
    throw new RangeError(`${name} must be a positive integer, got ${value}`);
  }
}
