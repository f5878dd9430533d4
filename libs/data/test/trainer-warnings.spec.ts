import { isOutOfMemoryError, outOfMemoryMessage, truncationWarning } from '../src';

describe('truncationWarning', () => {
  const summary = { examples: 10, longestKeptTokens: 64, longestExampleTokens: 300 };

  it('is null at or below the share, and names the counts, the length and the fix above it', () => {
    expect(truncationWarning({ ...summary, examplesWithTruncatedTargets: 2 }, 0.2)).toBeNull();
    expect(
      truncationWarning({ ...summary, examples: 0, examplesWithTruncatedTargets: 0 }, 0.2),
    ).toBeNull();
    expect(truncationWarning({ ...summary, examplesWithTruncatedTargets: 3 }, 0.2)).toBe(
      '3 of 10 examples (30%) lose completion tokens to truncation at max_seq_length 64; ' +
        'the longest example has 300 tokens. Raise max_seq_length (training.max_seq_length, ' +
        '--max-seq-length) or shorten the prompts.',
    );
  });
});

describe('out of memory', () => {
  it('recognises wasm aborts, failed heap growth and refused allocations, and nothing else', () => {
    const runtimeError = Object.assign(new Error('unreachable'), { name: 'RuntimeError' });
    expect(isOutOfMemoryError(runtimeError)).toBe(true);
    expect(isOutOfMemoryError(new Error('Aborted(). Build with -sASSERTIONS for more info.'))).toBe(
      true,
    );
    expect(
      isOutOfMemoryError(new RangeError('WebAssembly.Memory.grow(): Maximum memory size exceeded')),
    ).toBe(true);
    expect(isOutOfMemoryError(new RangeError('Array buffer allocation failed'))).toBe(true);
    expect(isOutOfMemoryError(new Error('line 3: not JSON'))).toBe(false);
    expect(isOutOfMemoryError('timeout')).toBe(false);
  });

  it('says what ran out and what to change, never the raw abort', () => {
    const text = outOfMemoryMessage({
      estimateMb: 5200,
      limitMb: 8000,
      advice: 'To fit: lower the batch size (now 4).',
    });
    expect(text).toBe(
      'the trainer ran out of memory (the pre-flight estimate was about 5,200 MiB, the memory limit 8,000 MiB). To fit: lower the batch size (now 4).',
    );
    expect(outOfMemoryMessage({ estimateMb: null, limitMb: null, advice: null })).toMatch(
      /^the trainer ran out of memory\. To fit: turn on gradient checkpointing/,
    );
  });
});
