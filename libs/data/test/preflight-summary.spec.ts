import {
  computeStepsPerEpoch,
  createTextTokenizer,
  loadTokenizer,
  preflightSummary,
  tokenizeExample,
  type TextTokenizer,
  type TrainingExample,
} from '../src';
import { TINY_PLAIN_DIR, buildTinyTokenizerJson } from './fixtures/tiny-tokenizers';

describe('computeStepsPerEpoch', () => {
  it.each([
    [10, 3, 1, 4],
    [10, 3, 2, 2],
    [12, 3, 4, 1],
    [13, 3, 4, 2],
    [1, 8, 1, 1],
    [0, 8, 1, 0],
  ])('%i examples, batch %i, accumulation %i → %i steps', (n, batch, accum, steps) => {
    expect(computeStepsPerEpoch(n, batch, accum)).toBe(steps);
  });

  it('rejects nonsense', () => {
    expect(() => computeStepsPerEpoch(10, 0)).toThrow(RangeError);
    expect(() => computeStepsPerEpoch(10, 2, 0)).toThrow(RangeError);
    expect(() => computeStepsPerEpoch(-1, 2)).toThrow(RangeError);
  });
});

describe('preflightSummary', () => {
  let tokenizer: TextTokenizer;
  beforeAll(async () => {
    tokenizer = await loadTokenizer(TINY_PLAIN_DIR);
  });

  const examples: TrainingExample[] = [
    {
      format: 'prompt_completion',
      prompt: 'What is the capital of France? Tell me in one short sentence, please.',
      completion: ' Paris.',
    },
    { format: 'text', text: 'The quick brown fox jumps over the lazy dog.' },
    {
      format: 'chat',
      messages: [
        { role: 'user', content: 'Hi', weight: 0 },
        { role: 'assistant', content: 'Hello!', weight: 1 },
      ],
    },
  ];

  it('agrees with tokenizeExample on tokens, targets and truncation', () => {
    const maxSeqLength = 8;
    const tokenized = examples.map((e) => tokenizeExample(e, tokenizer, { maxSeqLength }));
    const untruncated = examples.map((e) =>
      tokenizeExample(e, tokenizer, { maxSeqLength: 10_000 }),
    );
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    const summary = preflightSummary(examples, tokenizer, {
      maxSeqLength,
      batchSize: 2,
      epochs: 3,
      gradientAccumulationSteps: 1,
    });
    expect(summary).toEqual({
      examples: 3,
      tokens: sum(tokenized.map((t) => t.inputIds.length)),
      trainableTokens: sum(tokenized.map((t) => sum(t.lossMask))),
      truncatedExamples: tokenized.filter((t) => t.truncated).length,
      examplesWithoutTrainableTokens: tokenized.filter((t) => sum(t.lossMask) === 0).length,
      examplesWithTruncatedTargets: tokenized.filter(
        (t, i) => sum(t.lossMask) < sum(untruncated[i].lossMask),
      ).length,
      longestKeptTokens: Math.max(...tokenized.map((t) => t.inputIds.length)),
      longestExampleTokens: Math.max(...untruncated.map((t) => t.inputIds.length)),
      stepsPerEpoch: 2,
      totalSteps: 6,
    });
    // The example set is chosen so that truncation matters at this length.
    expect(summary.truncatedExamples).toBeGreaterThan(0);
    expect(summary.examplesWithoutTrainableTokens).toBeGreaterThan(0);
    expect(summary.examplesWithTruncatedTargets).toBeGreaterThan(0);
  });

  it('counts nothing truncated with a roomy maxSeqLength, and accumulation cuts steps', () => {
    const summary = preflightSummary(examples, tokenizer, {
      maxSeqLength: 512,
      batchSize: 1,
      epochs: 2,
      gradientAccumulationSteps: 2,
    });
    expect(summary).toMatchObject({
      truncatedExamples: 0,
      examplesWithoutTrainableTokens: 0,
      examplesWithTruncatedTargets: 0,
      stepsPerEpoch: 2,
      totalSteps: 4,
    });
    expect(summary.tokens).toBe(
      summary.longestExampleTokens + 0 + summary.tokens - summary.longestExampleTokens,
    );
  });

  it('names the example whose chat template fails', () => {
    const broken = createTextTokenizer(buildTinyTokenizerJson(), {
      chat_template: "{{ raise_exception('no system role') }}",
    });
    expect(() =>
      preflightSummary(examples, broken, { maxSeqLength: 64, batchSize: 1, epochs: 1 }),
    ).toThrow('example 3: chat template failed to render: no system role');
  });

  it('rejects nonsense options', () => {
    expect(() =>
      preflightSummary(examples, tokenizer, { maxSeqLength: 0, batchSize: 1, epochs: 1 }),
    ).toThrow(RangeError);
    expect(() =>
      preflightSummary(examples, tokenizer, { maxSeqLength: 8, batchSize: 1, epochs: 0 }),
    ).toThrow(RangeError);
  });
});
