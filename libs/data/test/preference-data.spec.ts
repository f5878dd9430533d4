import {
  DatasetValidationError,
  buildPreferenceBatch,
  loadTokenizer,
  parseJsonlExamples,
  parsePreferenceJsonl,
  tokenizePreferencePair,
  validateJsonl,
  type JsonlValidationResult,
  type PreferenceExample,
} from '../src';
import { TINY_CHATML_DIR } from './fixtures/tiny-tokenizers';

const user = (content: string) => ({ role: 'user', content });
const assistant = (content: string) => ({ role: 'assistant', content });
/** OpenAI's DPO line, as its docs show it (with the `tools` keys a real export carries). */
const pair = (overrides: Record<string, unknown> = {}): string =>
  JSON.stringify({
    input: {
      messages: [user('How cold is San Francisco today?')],
      tools: [],
      parallel_tool_calls: true,
    },
    preferred_output: [assistant('About 14 °C in the morning, 20 °C by noon.')],
    non_preferred_output: [assistant('Not very.')],
    ...overrides,
  });
const GOOD_PAIR = pair();
const GOOD_CHAT = JSON.stringify({ messages: [user('Hi'), assistant('Hello!')] });
const GOOD_PC = JSON.stringify({ prompt: 'Q: 2+2=', completion: ' 4' });

describe('validateJsonl: preference (DPO) files', () => {
  it('accepts OpenAI preference lines and reports the file as preference data', () => {
    expect(validateJsonl(`${GOOD_PAIR}\n\n${GOOD_PAIR}\n`)).toEqual<JsonlValidationResult>({
      ok: true,
      format: 'preference',
      kind: 'preference',
      examples: 2,
      rows: 2,
      errors: [],
      errorCount: 0,
    });
  });

  it('reports an SFT file as SFT data', () => {
    expect(validateJsonl(`${GOOD_PC}\n${GOOD_PC}`)).toMatchObject({ ok: true, kind: 'sft' });
  });

  it('normalizes a pair: the prompt is never scored, every output message is', () => {
    const line = pair({
      input: { messages: [{ role: 'system', content: 'Be brief.' }, user('Hi'), assistant('Yo')] },
      preferred_output: [assistant('Hello!'), assistant('How can I help?')],
    });
    expect(parsePreferenceJsonl(line)).toEqual<PreferenceExample[]>([
      {
        format: 'preference',
        prompt: [
          { role: 'system', content: 'Be brief.', weight: 0 },
          { role: 'user', content: 'Hi', weight: 0 },
          { role: 'assistant', content: 'Yo', weight: 0 },
        ],
        chosen: [
          { role: 'assistant', content: 'Hello!', weight: 1 },
          { role: 'assistant', content: 'How can I help?', weight: 1 },
        ],
        rejected: [{ role: 'assistant', content: 'Not very.', weight: 1 }],
      },
    ]);
  });

  it.each([
    [
      'no non_preferred_output',
      JSON.stringify({ input: { messages: [user('a')] }, preferred_output: [assistant('b')] }),
      '"non_preferred_output" is missing (a preference line needs "input", "preferred_output", "non_preferred_output")',
    ],
    [
      'an input that is not an object',
      pair({ input: 'hi' }),
      '"input" must be an object, got a string',
    ],
    ['an input without messages', pair({ input: { tools: [] } }), '"input.messages" is missing'],
    ['an empty prompt', pair({ input: { messages: [] } }), '"input.messages" is empty'],
    [
      'a tool role in the prompt',
      pair({ input: { messages: [{ role: 'tool', content: 'x' }] } }),
      'input.messages[0].role "tool" is not supported (expected system, user, assistant)',
    ],
    [
      'a weight in the prompt',
      pair({ input: { messages: [{ ...assistant('x'), weight: 1 }] } }),
      'input.messages[0].weight is not allowed in preference data: the prompt is never trained',
    ],
    [
      'an output that is one message, not a list',
      pair({ preferred_output: assistant('b') }),
      '"preferred_output" must be an array of assistant messages, got an object',
    ],
    ['an empty output', pair({ non_preferred_output: [] }), '"non_preferred_output" is empty'],
    [
      'a user message as output',
      pair({ preferred_output: [user('b')] }),
      'preferred_output[0].role must be "assistant", got "user"',
    ],
    [
      'a blank output',
      pair({ non_preferred_output: [assistant('ok'), assistant('  ')] }),
      'non_preferred_output[1].content is empty',
    ],
    [
      'content parts instead of a string',
      pair({ non_preferred_output: [{ role: 'assistant', content: [{ type: 'text' }] }] }),
      'non_preferred_output[0].content must be a string, got an array',
    ],
    [
      'a weight on an output',
      pair({ preferred_output: [{ ...assistant('b'), weight: 0 }] }),
      'preferred_output[0].weight is not allowed in preference data: every output is trained',
    ],
    [
      'SFT and preference fields on one line',
      pair({ messages: [user('a'), assistant('b')] }),
      'ambiguous line: it has fields of more than one format ("messages", "input"/"preferred_output"/"non_preferred_output")',
    ],
  ])('names the line of %s', (_, badLine, reason) => {
    const result = validateJsonl([GOOD_PAIR, '', badLine, GOOD_PAIR].join('\n'));
    expect(result).toMatchObject({ ok: false, kind: 'preference', examples: 2, rows: 3 });
    expect(result.errors).toEqual([{ line: 3, reason }]);
  });

  it('rejects a file mixing SFT and preference lines, naming the first offending line', () => {
    const result = validateJsonl(
      [GOOD_CHAT, '', GOOD_CHAT, GOOD_PAIR, GOOD_PC, GOOD_PAIR].join('\n'),
    );
    expect(result).toMatchObject({ ok: false, format: 'mixed', kind: 'mixed', examples: 2 });
    expect(result.errors[0]).toEqual({
      line: 4,
      reason:
        'line is preference (DPO) data but the file holds SFT data (set by line 1); a file holds one kind',
    });
    expect(result.errors.map((e) => e.line)).toEqual([4, 5, 6]);
  });

  it('names the first SFT line of a preference file the same way', () => {
    const result = validateJsonl([GOOD_PAIR, GOOD_PC].join('\n'));
    expect(result.kind).toBe('mixed');
    expect(result.errors).toEqual([
      {
        line: 2,
        reason:
          'line is SFT data but the file holds preference (DPO) data (set by line 1); a file holds one kind',
      },
    ]);
  });

  it('keeps kind "sft" when two SFT shapes mix (the format error still applies)', () => {
    expect(validateJsonl([GOOD_CHAT, GOOD_PC].join('\n'))).toMatchObject({
      format: 'mixed',
      kind: 'sft',
    });
  });

  it('each parser refuses the other kind of file with a whole-file error', () => {
    const sftError = (): unknown => parseJsonlExamples(`${GOOD_PAIR}\n`);
    expect(sftError).toThrow(DatasetValidationError);
    expect(sftError).toThrow('file holds preference (DPO) data (set by line 1), not SFT data');
    expect(() => parsePreferenceJsonl(`\n${GOOD_CHAT}\n`)).toThrow(
      'file holds SFT data (set by line 2), not preference (DPO) data',
    );
    expect(validateJsonl(`${GOOD_PAIR}\n`).ok).toBe(true);
  });
});

describe('tokenizePreferencePair and buildPreferenceBatch', () => {
  const example: PreferenceExample = {
    format: 'preference',
    prompt: [
      { role: 'system', content: 'Be brief.', weight: 0 },
      { role: 'user', content: 'Say hi', weight: 0 },
    ],
    chosen: [{ role: 'assistant', content: 'Hello there!', weight: 1 }],
    rejected: [{ role: 'assistant', content: 'No.', weight: 1 }],
  };

  it('masks the prompt and scores exactly each completion and its end of turn', async () => {
    const tokenizer = await loadTokenizer(TINY_CHATML_DIR);
    const { chosen, rejected } = tokenizePreferencePair(example, tokenizer, { maxSeqLength: 256 });
    const scored = (row: { inputIds: number[]; lossMask: number[] }): string =>
      tokenizer.decode(row.inputIds.filter((_, t) => row.lossMask[t] === 1));
    expect(scored(chosen)).toBe('Hello there!<|im_end|>\n');
    expect(scored(rejected)).toBe('No.<|im_end|>\n');
    // The unscored prefix is the same prompt, up to the assistant header, on both sides.
    const prefix = (row: { lossMask: number[] }) => row.lossMask.indexOf(1);
    expect(prefix(chosen)).toBe(prefix(rejected));
    expect(chosen.inputIds.slice(0, prefix(chosen))).toEqual(
      rejected.inputIds.slice(0, prefix(rejected)),
    );
    expect(tokenizer.decode(chosen.inputIds.slice(0, prefix(chosen)))).toBe(
      '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSay hi<|im_end|>\n' +
        '<|im_start|>assistant\n',
    );
    expect(chosen.truncated || rejected.truncated).toBe(false);
  });

  it('puts chosen rows first and rejected rows after, padded to one length', async () => {
    const tokenizer = await loadTokenizer(TINY_CHATML_DIR);
    const second: PreferenceExample = {
      ...example,
      prompt: [{ role: 'user', content: 'Count to three', weight: 0 }],
      chosen: [{ role: 'assistant', content: 'one two three', weight: 1 }],
    };
    const pairs = [example, second].map((e) =>
      tokenizePreferencePair(e, tokenizer, { maxSeqLength: 256 }),
    );
    const batch = buildPreferenceBatch(pairs, { padTokenId: tokenizer.padTokenId });
    expect(batch.pairs).toBe(2);
    const rows = [pairs[0].chosen, pairs[1].chosen, pairs[0].rejected, pairs[1].rejected];
    const length = Math.max(...rows.map((r) => r.inputIds.length));
    expect(batch.inputIds).toHaveLength(4);
    rows.forEach((row, b) => {
      const n = row.inputIds.length;
      expect(batch.inputIds[b]).toHaveLength(length);
      expect(batch.inputIds[b].slice(0, n)).toEqual(row.inputIds);
      expect(batch.lossMask[b]).toEqual([
        ...row.lossMask,
        ...new Array<number>(length - n).fill(0),
      ]);
      expect(batch.attentionMask[b].reduce((s, m) => s + m, 0)).toBe(n);
    });
  });

  it('a pair cut inside its prompt has no scored tokens and says it was truncated', async () => {
    const tokenizer = await loadTokenizer(TINY_CHATML_DIR);
    const { chosen } = tokenizePreferencePair(example, tokenizer, { maxSeqLength: 4 });
    expect(chosen.truncated).toBe(true);
    expect(chosen.lossMask).toEqual([0, 0, 0, 0]);
  });
});
