/**
 * What a resolved fine-tune will do, computed before it runs and without tfjs: the tokens it
 * trains on (the trainer's own tokenization, truncation and loss mask: `preflightSummary`, or
 * `preferencePreflightSummary` over the pairs of a DPO run), its steps and epochs (the trainer's
 * step count, `computeStepsPerEpoch`, capped by `max_steps`)
 * and its peak memory (`estimateTrainingMemory`, with the inputs `runFineTune` gives it). The
 * API answers `POST /v1/fine_tuning/jobs/estimate` with it; lora-core's pre-flight builds its
 * memory input with {@link trainingMemoryInput}, so both read the same numbers.
 */
import type { FineTuneSpec } from '@lorafleet/contracts';

import { defaultTargetModules } from '../models/model-parameters';
import {
  preferencePreflightSummary,
  preflightSummary,
  type PreflightOptions,
  type PreflightSummary,
} from '../preflight.summary';
import type { TextTokenizer } from '../text-tokenizer';
import type { PreferenceExample, TrainingExample } from '../training-example.types';
import {
  estimateTrainingMemory,
  type MemoryEstimate,
  type MemoryEstimateInput,
  type TrainingMemoryShape,
} from './training-memory.estimate';

/**
 * The memory estimate's input for `spec` on a model of `shape`, given the pre-flight summary of
 * its training data: a micro-batch is at most as wide as the data (`examples`) and as long as
 * the longest kept sequence. Frozen weights count as float32 whatever the checkpoint stores:
 * Debian's OpenBLAS 0.3.21 has no bf16 GEMM, and upcasting per product would cost speed on every
 * step, so the trainer keeps them in f32.
 */
export function trainingMemoryInput<Shape extends TrainingMemoryShape>(
  spec: Pick<FineTuneSpec, 'hyperparameters' | 'lora' | 'training' | 'method'>,
  summary: Pick<PreflightSummary, 'examples' | 'longestKeptTokens'>,
  shape: Shape,
): MemoryEstimateInput & { config: Shape } {
  // A DPO micro-batch holds both sides of each pair (`examples` counts pairs): twice the rows.
  // The reference pass runs first, outside the tape, and frees its activations before the
  // policy pass, so it adds no rows of its own.
  const rowsPerExample = spec.method.type === 'dpo' ? 2 : 1;
  return {
    config: shape,
    batchSize:
      Math.min(spec.hyperparameters.batch_size, Math.max(1, summary.examples)) * rowsPerExample,
    seqLength: Math.max(1, summary.longestKeptTokens),
    lora: {
      r: spec.lora.r,
      targetModules: spec.lora.target_modules ?? defaultTargetModules(shape.modelType),
    },
    weightBytesPerParameter: 4,
    gradientCheckpointing: spec.training.gradient_checkpointing,
  };
}

export interface FineTuneRunEstimate {
  /** Training examples, or preference pairs for a DPO run (what the trainer's steps count). */
  examples: number;
  /**
   * Tokens one epoch reads after truncation (padding excluded): the trainer's `trained_tokens`
   * per epoch. A DPO run counts both sides of every pair, as its policy pass reads both.
   */
  tokensPerEpoch: number;
  /** Loss targets (completion and assistant tokens) one epoch scores; both sides for DPO. */
  targetTokensPerEpoch: number;
  /**
   * Tokens the whole run reads: per epoch × whole epochs, plus, when `max_steps` stops the run
   * inside an epoch, that epoch's tokens prorated by the steps it runs (which examples those
   * steps read depends on the seeded shuffle; `exact` is false then).
   */
  trainedTokens: number;
  targetTokens: number;
  /** Whether `trainedTokens` is exactly what the trainer will report. */
  exact: boolean;
  stepsPerEpoch: number;
  totalSteps: number;
  /** Epochs the run covers: `n_epochs`, or fewer when `max_steps` stops it first. */
  epochs: number;
  /** Examples (DPO: pairs with either side) cut at `max_seq_length`. */
  truncatedExamples: number;
  /** Examples (DPO: pairs with either side) left with no target token. */
  examplesWithoutTargets: number;
  longestKeptTokens: number;
  memory: MemoryEstimate;
  memoryInput: MemoryEstimateInput;
}

/**
 * Tokenizes the training data as the trainer will and sizes the run `spec` describes: supervised
 * examples (`parseJsonlExamples`), or for `method.type: "dpo"` preference pairs
 * (`parsePreferenceJsonl`), as `runFineTune` reads each. Data of the other kind is refused.
 */
export function estimateFineTuneRun(
  data: readonly TrainingExample[] | readonly PreferenceExample[],
  tokenizer: TextTokenizer,
  spec: Pick<FineTuneSpec, 'hyperparameters' | 'lora' | 'training' | 'method'>,
  shape: TrainingMemoryShape,
): FineTuneRunEstimate {
  const epochs = spec.hyperparameters.n_epochs;
  const options: PreflightOptions = {
    maxSeqLength: spec.training.max_seq_length,
    batchSize: spec.hyperparameters.batch_size,
    epochs,
    gradientAccumulationSteps: spec.training.gradient_accumulation_steps,
  };
  const summary =
    spec.method.type === 'dpo'
      ? preferencePreflightSummary(preferencePairs(data), tokenizer, options)
      : preflightSummary(supervisedExamples(data), tokenizer, options);
  // The trainer's own cap: min(steps per epoch × epochs, max_steps) (lora-core Trainer).
  const totalSteps = Math.min(
    summary.totalSteps,
    spec.training.max_steps ?? Number.MAX_SAFE_INTEGER,
  );
  const stepsPerEpoch = Math.max(1, summary.stepsPerEpoch);
  const wholeEpochs = Math.floor(totalSteps / stepsPerEpoch);
  const stepsLeft = totalSteps - wholeEpochs * stepsPerEpoch;
  const exact = stepsLeft === 0;
  const share = (perEpoch: number) =>
    perEpoch * wholeEpochs + Math.round((perEpoch * stepsLeft) / stepsPerEpoch);
  const memoryInput = trainingMemoryInput(spec, summary, shape);
  return {
    examples: summary.examples,
    tokensPerEpoch: summary.tokens,
    targetTokensPerEpoch: summary.trainableTokens,
    trainedTokens: share(summary.tokens),
    targetTokens: share(summary.trainableTokens),
    exact,
    stepsPerEpoch: summary.stepsPerEpoch,
    totalSteps,
    epochs: summary.stepsPerEpoch > 0 ? totalSteps / summary.stepsPerEpoch : 0,
    truncatedExamples: summary.truncatedExamples,
    examplesWithoutTargets: summary.examplesWithoutTrainableTokens,
    longestKeptTokens: summary.longestKeptTokens,
    memory: estimateTrainingMemory(memoryInput),
    memoryInput,
  };
}

type TrainingData = TrainingExample | PreferenceExample;

function preferencePairs(data: readonly TrainingData[]): readonly PreferenceExample[] {
  const pairs = data.filter((item): item is PreferenceExample => item.format === 'preference');
  if (pairs.length !== data.length) {
    throw new TypeError(
      'a DPO run trains on preference pairs (parsePreferenceJsonl), not supervised examples',
    );
  }
  return pairs;
}

function supervisedExamples(data: readonly TrainingData[]): readonly TrainingExample[] {
  const examples = data.filter((item): item is TrainingExample => item.format !== 'preference');
  if (examples.length !== data.length) {
    throw new TypeError(
      'preference pairs train only with method.type "dpo"; a supervised run needs parseJsonlExamples data',
    );
  }
  return examples;
}
