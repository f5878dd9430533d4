/**
 * estimateFineTuneRun (issue 20 item 3): the figures the API's job estimate answers, from the
 * trainer's own tokenization (preflightSummary, or preferencePreflightSummary over DPO pairs)
 * and step count, and the config-only memory estimate of ModelFacts' shape.
 */
import {
  computeStepsPerEpoch,
  estimateFineTuneRun,
  estimateTrainingMemory,
  loadTokenizer,
  modelFactsFromConfig,
  preferencePreflightSummary,
  preflightSummary,
  resolveFineTuneSpec,
  tokenizePreferencePair,
  type ChatMessage,
  type PreferenceExample,
  type TextTokenizer,
  type TrainingExample,
} from '../src';
import { TINY_PLAIN_DIR } from './fixtures/tiny-tokenizers';

const GPT2_CONFIG = {
  model_type: 'gpt2',
  n_embd: 32,
  n_head: 2,
  n_layer: 2,
  n_positions: 64,
  vocab_size: 400,
};

const examples: TrainingExample[] = Array.from({ length: 7 }, (_, i) => ({
  format: 'prompt_completion',
  prompt: `Question number ${i}: what comes next?`,
  completion: ` the answer ${'is '.repeat(i)}here`,
}));

const user = (content: string): ChatMessage => ({ role: 'user', content, weight: 0 });
const assistant = (content: string): ChatMessage => ({ role: 'assistant', content, weight: 1 });
// Five pairs, one with a long rejected side that max_seq_length 24 cuts.
const pairs: PreferenceExample[] = Array.from({ length: 5 }, (_, i) => ({
  format: 'preference',
  prompt: [user(`What is two plus ${i}?`)],
  chosen: [assistant(`It is ${2 + i}.`)],
  rejected: [assistant(i === 4 ? 'I do not know, '.repeat(8) : `Maybe ${i}.`)],
}));

describe('estimateFineTuneRun', () => {
  let tokenizer: TextTokenizer;
  beforeAll(async () => {
    tokenizer = await loadTokenizer(TINY_PLAIN_DIR);
  });
  const facts = modelFactsFromConfig(GPT2_CONFIG);
  const context = { model: 'tiny', contextLength: 64, trainingExamples: examples.length };

  it('counts the trainer’s tokens, steps and epochs, exactly for whole epochs', () => {
    const spec = resolveFineTuneSpec(
      { hyperparameters: { n_epochs: 3, batch_size: 2 }, training: { max_seq_length: 32 } },
      context,
    );
    const estimate = estimateFineTuneRun(examples, tokenizer, spec, facts.trainingShape);
    const summary = preflightSummary(examples, tokenizer, {
      maxSeqLength: 32,
      batchSize: 2,
      epochs: 3,
    });
    expect(estimate).toMatchObject({
      examples: 7,
      tokensPerEpoch: summary.tokens,
      targetTokensPerEpoch: summary.trainableTokens,
      trainedTokens: 3 * summary.tokens,
      targetTokens: 3 * summary.trainableTokens,
      exact: true,
      stepsPerEpoch: 4,
      totalSteps: 12,
      epochs: 3,
      longestKeptTokens: summary.longestKeptTokens,
    });
    expect(summary.tokens).toBeGreaterThan(summary.trainableTokens);
    expect(estimate.memory).toEqual(estimateTrainingMemory(estimate.memoryInput));
    expect(estimate.memoryInput).toMatchObject({
      batchSize: 2,
      seqLength: summary.longestKeptTokens,
      lora: { r: 8, targetModules: ['c_attn'] },
    });
  });

  it('max_steps stops the run inside an epoch: fewer epochs, prorated tokens, not exact', () => {
    const spec = resolveFineTuneSpec(
      {
        hyperparameters: { n_epochs: 3, batch_size: 2 },
        training: { max_seq_length: 32, max_steps: 6 },
      },
      context,
    );
    const estimate = estimateFineTuneRun(examples, tokenizer, spec, facts.trainingShape);
    expect(estimate.totalSteps).toBe(6);
    expect(estimate.epochs).toBe(1.5);
    expect(estimate.exact).toBe(false);
    expect(estimate.trainedTokens).toBe(
      estimate.tokensPerEpoch + Math.round(estimate.tokensPerEpoch / 2),
    );
  });

  it('truncation at max_seq_length shrinks the tokens and the memory of the run', () => {
    const long = resolveFineTuneSpec({ training: { max_seq_length: 64 } }, context);
    const short = resolveFineTuneSpec({ training: { max_seq_length: 8 } }, context);
    const a = estimateFineTuneRun(examples, tokenizer, long, facts.trainingShape);
    const b = estimateFineTuneRun(examples, tokenizer, short, facts.trainingShape);
    expect(b.tokensPerEpoch).toBeLessThan(a.tokensPerEpoch);
    expect(b.truncatedExamples).toBe(7);
    expect(b.longestKeptTokens).toBe(8);
    expect(b.memory.totalBytes).toBeLessThan(a.memory.totalBytes);
  });

  it('sizes a DPO run in pairs: the DPO trainer’s steps, and trained tokens over both sides', () => {
    const dpoContext = { ...context, trainingExamples: pairs.length };
    const spec = resolveFineTuneSpec(
      {
        method: { type: 'dpo' },
        hyperparameters: { n_epochs: 2, batch_size: 2 },
        training: { max_seq_length: 24, gradient_accumulation_steps: 2 },
      },
      dpoContext,
    );
    const estimate = estimateFineTuneRun(pairs, tokenizer, spec, facts.trainingShape);
    // What the DPO trainer reads: each side tokenized as runFineTune does, and every kept id of
    // both sides counted in trained_tokens (preference-pass pairBatch).
    const sides = pairs.flatMap((pair) => {
      const tokenized = tokenizePreferencePair(pair, tokenizer, { maxSeqLength: 24 });
      return [tokenized.chosen, tokenized.rejected];
    });
    const trainerTokensPerEpoch = sides.reduce((n, side) => n + side.inputIds.length, 0);
    const trainerTargetsPerEpoch = sides.reduce(
      (n, side) => n + side.lossMask.reduce((m, bit) => m + bit, 0),
      0,
    );
    // ceil(ceil(5 pairs / 2) / 2) = 2 steps an epoch, over pairs (the trainer's DataSchedule).
    const stepsPerEpoch = computeStepsPerEpoch(pairs.length, 2, 2);
    expect(stepsPerEpoch).toBe(2);
    const summary = preferencePreflightSummary(pairs, tokenizer, {
      maxSeqLength: 24,
      batchSize: 2,
      epochs: 2,
      gradientAccumulationSteps: 2,
    });
    expect(summary).toMatchObject({
      tokens: trainerTokensPerEpoch,
      trainableTokens: trainerTargetsPerEpoch,
      stepsPerEpoch,
      totalSteps: 2 * stepsPerEpoch,
    });
    expect(estimate).toMatchObject({
      examples: 5,
      tokensPerEpoch: trainerTokensPerEpoch,
      targetTokensPerEpoch: trainerTargetsPerEpoch,
      trainedTokens: 2 * trainerTokensPerEpoch,
      targetTokens: 2 * trainerTargetsPerEpoch,
      exact: true,
      stepsPerEpoch,
      totalSteps: 2 * stepsPerEpoch,
      epochs: 2,
      truncatedExamples: 1,
      longestKeptTokens: 24,
    });
    // Both sides of a pair: more than the chosen chats alone would read.
    const chosenOnly = preflightSummary(
      pairs.map((pair) => ({
        format: 'chat' as const,
        messages: [...pair.prompt, ...pair.chosen],
      })),
      tokenizer,
      { maxSeqLength: 24, batchSize: 2, epochs: 1 },
    );
    expect(estimate.tokensPerEpoch).toBeGreaterThan(chosenOnly.tokens);
    // A micro-batch of 2 pairs holds 4 rows (trainingMemoryInput, shared with the trainer).
    expect(estimate.memoryInput).toMatchObject({ batchSize: 4, seqLength: 24 });
    expect(estimate.memory).toEqual(estimateTrainingMemory(estimate.memoryInput));

    // max_steps inside an epoch caps the pairs' run as it caps a supervised one.
    const capped = estimateFineTuneRun(
      pairs,
      tokenizer,
      resolveFineTuneSpec(
        {
          method: { type: 'dpo' },
          hyperparameters: { n_epochs: 2, batch_size: 2 },
          training: { max_seq_length: 24, gradient_accumulation_steps: 2, max_steps: 3 },
        },
        dpoContext,
      ),
      facts.trainingShape,
    );
    expect(capped).toMatchObject({ totalSteps: 3, epochs: 1.5, exact: false });
  });

  it('refuses data of the other kind than the method trains on', () => {
    const supervised = resolveFineTuneSpec({}, context);
    const dpo = resolveFineTuneSpec({ method: { type: 'dpo' } }, context);
    expect(() => estimateFineTuneRun(pairs, tokenizer, supervised, facts.trainingShape)).toThrow(
      /preference pairs train only with method.type "dpo"/,
    );
    expect(() => estimateFineTuneRun(examples, tokenizer, dpo, facts.trainingShape)).toThrow(
      /a DPO run trains on preference pairs/,
    );
  });
});
