import { buildBatch, loadTokenizer, tokenizeExample, type TrainingExample } from '../src';
import { TINY_PLAIN_DIR } from './fixtures/tiny-tokenizers';

const PAD = 9;

describe('buildBatch', () => {
  it('pads on the right to the longest example, masking pads out', () => {
    const batch = buildBatch(
      [
        { inputIds: [1, 2, 3], lossMask: [0, 1, 1] },
        { inputIds: [4], lossMask: [0] },
      ],
      { padTokenId: PAD },
    );
    expect(batch).toEqual({
      inputIds: [
        [1, 2, 3],
        [4, PAD, PAD],
      ],
      attentionMask: [
        [1, 1, 1],
        [1, 0, 0],
      ],
      lossMask: [
        [0, 1, 1],
        [0, 0, 0],
      ],
    });
  });

  it('pads to a fixed length when asked, and refuses one that is too short', () => {
    const examples = [{ inputIds: [1, 2], lossMask: [0, 1] }];
    expect(buildBatch(examples, { padTokenId: PAD, padToLength: 4 }).inputIds).toEqual([
      [1, 2, PAD, PAD],
    ]);
    expect(() => buildBatch(examples, { padTokenId: PAD, padToLength: 1 })).toThrow(RangeError);
  });

  it('rejects an example whose mask does not match its ids', () => {
    expect(() => buildBatch([{ inputIds: [1, 2], lossMask: [0] }], { padTokenId: PAD })).toThrow(
      'example 0 has 2 ids but 1 mask entries',
    );
  });

  it('returns an empty batch for no examples and leaves its inputs alone', () => {
    expect(buildBatch([], { padTokenId: PAD })).toEqual({
      inputIds: [],
      attentionMask: [],
      lossMask: [],
    });
    const example = { inputIds: [1], lossMask: [0] };
    buildBatch([example, { inputIds: [1, 2], lossMask: [0, 1] }], { padTokenId: PAD });
    expect(example).toEqual({ inputIds: [1], lossMask: [0] });
  });

  it('aligns lossMask with input positions: shifted, it weights exactly the completion targets', async () => {
    const tokenizer = await loadTokenizer(TINY_PLAIN_DIR);
    const examples: TrainingExample[] = [
      { format: 'prompt_completion', prompt: 'Two plus two is', completion: ' four.' },
      { format: 'prompt_completion', prompt: 'Hi', completion: ' there, friend.' },
    ];
    const batch = buildBatch(
      examples.map((e) => tokenizeExample(e, tokenizer, { maxSeqLength: 64 })),
      { padTokenId: tokenizer.padTokenId },
    );
    // What the trainer does: logits at t-1 predict inputIds[t], weighted by lossMask[t].
    batch.inputIds.forEach((row, b) => {
      const targets = row.slice(1);
      const weights = batch.lossMask[b].slice(1);
      const trainedTargets = targets.filter((_, t) => weights[t] === 1);
      const example = examples[b];
      if (example.format !== 'prompt_completion') throw new Error('unreachable');
      expect(tokenizer.decode(trainedTargets)).toBe(`${example.completion}<|endoftext|>`);
      // Padding is never a target and never attended to.
      row.forEach((_, t) => {
        if (batch.attentionMask[b][t] === 0) expect(batch.lossMask[b][t]).toBe(0);
      });
    });
  });
});
