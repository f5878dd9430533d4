import { estimateExampleTokens, estimateTokenCount } from '../src';

describe('token count estimates', () => {
  it('counts about four UTF-8 bytes per token', () => {
    expect(estimateTokenCount('')).toBe(0);
    expect(estimateTokenCount('abcd')).toBe(1);
    expect(estimateTokenCount('abcde')).toBe(2);
    expect(estimateTokenCount('éé')).toBe(1);
  });

  it('adds markup overhead per example', () => {
    expect(estimateExampleTokens({ format: 'text', text: 'abcd' })).toBe(3);
    expect(
      estimateExampleTokens({ format: 'prompt_completion', prompt: 'abcd', completion: 'abcd' }),
    ).toBe(4);
    expect(
      estimateExampleTokens({
        format: 'chat',
        messages: [
          { role: 'user', content: 'abcd', weight: 0 },
          { role: 'assistant', content: 'abcd', weight: 1 },
        ],
      }),
    ).toBe(12);
  });
});
