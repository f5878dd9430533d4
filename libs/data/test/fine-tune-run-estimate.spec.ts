/**
 * estimateFineTuneRun (issue 20 item 3): the figures the API's job estimate answers, from the
 * trainer's own tokenization (preflightSummary) and step count, and the config-only memory
 * estimate of ModelFacts' shape.
 */
import {
  estimateFineTuneRun,
  estimateTrainingMemory,
  loadTokenizer,
  modelFactsFromConfig,
  preflightSummary,
  resolveFineTuneSpec,
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
});
