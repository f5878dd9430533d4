import {
  DatasetValidationError,
  MAX_REPORTED_ERRORS,
  parseJsonlExamples,
  summarizeValidationErrors,
  validateJsonl,
  type JsonlValidationResult,
} from '../src';

const chat = (messages: unknown[]): string => JSON.stringify({ messages });
const user = (content: string) => ({ role: 'user', content });
const assistant = (content: string, extra: Record<string, unknown> = {}) => ({
  role: 'assistant',
  content,
  ...extra,
});
const GOOD_CHAT = chat([user('Hi'), assistant('Hello!')]);
const GOOD_PC = JSON.stringify({ prompt: 'Q: 2+2=', completion: ' 4' });
const GOOD_TEXT = JSON.stringify({ text: 'Once upon a time.' });

/** Validates `lines` joined by newlines, expecting exactly one error, and returns it. */
function singleError(lines: string[]): { line: number; reason: string } {
  const result = validateJsonl(lines.join('\n'));
  expect(result.ok).toBe(false);
  expect(result.errorCount).toBe(1);
  expect(result.errors).toHaveLength(1);
  return result.errors[0];
}

describe('validateJsonl: valid files', () => {
  it.each([
    ['chat', GOOD_CHAT],
    ['prompt_completion', GOOD_PC],
    ['text', GOOD_TEXT],
  ] as const)('accepts a %s file', (format, line) => {
    const result = validateJsonl(`${line}\n${line}\n`);
    expect(result).toEqual<JsonlValidationResult>({
      ok: true,
      format,
      kind: 'sft',
      examples: 2,
      rows: 2,
      errors: [],
      errorCount: 0,
    });
  });

  it('skips blank and whitespace-only lines but keeps counting them for line numbers', () => {
    const result = validateJsonl(`\n${GOOD_TEXT}\n   \n\t\n{"text": 5}\n\n`);
    expect(result.examples).toBe(1);
    expect(result.rows).toBe(2);
    expect(result.errors).toEqual([{ line: 5, reason: '"text" must be a string, got a number' }]);
  });

  it('accepts CRLF line endings and a leading byte-order mark', () => {
    const result = validateJsonl(`\uFEFF${GOOD_TEXT}\r\n${GOOD_TEXT}\r\n`);
    expect(result).toMatchObject({ ok: true, examples: 2 });
  });

  it('accepts bytes as well as strings', () => {
    const bytes = new TextEncoder().encode(`${GOOD_CHAT}\n${GOOD_CHAT}`);
    expect(validateJsonl(bytes)).toMatchObject({ ok: true, format: 'chat', examples: 2 });
  });

  it('ignores unknown keys on lines and on messages (OpenAI files carry extras)', () => {
    const line = JSON.stringify({
      messages: [{ role: 'user', content: 'Hi', name: 'bob' }, assistant('Yo')],
      tools: [],
    });
    expect(parseJsonlExamples(line)).toEqual([
      {
        format: 'chat',
        messages: [
          { role: 'user', content: 'Hi', weight: 0 },
          { role: 'assistant', content: 'Yo', weight: 1 },
        ],
      },
    ]);
  });

  it('accepts weight 0 on some assistant messages when another one is trained', () => {
    const line = chat([
      { role: 'system', content: 'Be brief.' },
      user('a'),
      assistant('draft', { weight: 0 }),
      user('b'),
      assistant('final', { weight: 1 }),
    ]);
    const [example] = parseJsonlExamples(line);
    expect(example).toEqual({
      format: 'chat',
      messages: [
        { role: 'system', content: 'Be brief.', weight: 0 },
        { role: 'user', content: 'a', weight: 0 },
        { role: 'assistant', content: 'draft', weight: 0 },
        { role: 'user', content: 'b', weight: 0 },
        { role: 'assistant', content: 'final', weight: 1 },
      ],
    });
  });

  it('accepts an empty prompt and an empty user message', () => {
    expect(validateJsonl(JSON.stringify({ prompt: '', completion: 'x' })).ok).toBe(true);
    expect(validateJsonl(chat([user(''), assistant('x')])).ok).toBe(true);
  });

  it('normalizes prompt/completion and text lines, dropping extra keys', () => {
    const content = [
      JSON.stringify({ prompt: 'p', completion: 'c', id: 7 }),
      JSON.stringify({ prompt: 'p2', completion: 'c2' }),
    ].join('\n');
    expect(parseJsonlExamples(content)).toEqual([
      { format: 'prompt_completion', prompt: 'p', completion: 'c' },
      { format: 'prompt_completion', prompt: 'p2', completion: 'c2' },
    ]);
    expect(parseJsonlExamples(`${GOOD_TEXT}\n`)).toEqual([
      { format: 'text', text: 'Once upon a time.' },
    ]);
  });
});

describe('validateJsonl: line errors carry the 1-based line number and a reason', () => {
  it.each<[string, string, string | RegExp]>([
    ['non-JSON', '{"text": "a"', /^invalid JSON: /],
    ['trailing garbage', '{"text": "a"} x', /^invalid JSON: /],
    ['an array line', '[1, 2]', 'expected a JSON object, got an array'],
    ['a string line', '"hello"', 'expected a JSON object, got a string'],
    ['a number line', '42', 'expected a JSON object, got a number'],
    ['a boolean line', 'true', 'expected a JSON object, got a boolean'],
    ['a null line', 'null', 'expected a JSON object, got null'],
    [
      'an object with no known keys',
      '{"mesages": [], "id": 1}',
      'no training fields: expected "messages", "prompt" and "completion", "text", or "input" with "preferred_output" and "non_preferred_output"; found "mesages", "id"',
    ],
    [
      'an empty object',
      '{}',
      'no training fields: expected "messages", "prompt" and "completion", "text", or "input" with "preferred_output" and "non_preferred_output"; it has none',
    ],
    [
      'two formats on one line',
      '{"text": "a", "prompt": "b", "completion": "c"}',
      'ambiguous line: it has fields of more than one format ("prompt"/"completion", "text")',
    ],
    ['messages not an array', '{"messages": "hi"}', '"messages" must be an array, got a string'],
    ['empty messages', '{"messages": []}', '"messages" is empty'],
    [
      'a message that is not an object',
      chat(['hi']),
      'messages[0] must be an object, got a string',
    ],
    ['a message without role', chat([{ content: 'x' }]), 'messages[0].role is missing'],
    [
      'a non-string role',
      chat([{ role: 1, content: 'x' }]),
      'messages[0].role must be a string, got a number',
    ],
    [
      'an unknown role',
      chat([user('q'), { role: 'tool', content: 'x' }]),
      'messages[1].role "tool" is not supported (expected system, user, assistant)',
    ],
    ['a message without content', chat([{ role: 'user' }]), 'messages[0].content is missing'],
    [
      'null content',
      chat([user('q'), { role: 'assistant', content: null }]),
      'messages[1].content must be a string, got null',
    ],
    [
      'array content',
      chat([{ role: 'user', content: [{ type: 'text', text: 'x' }] }, assistant('y')]),
      'messages[0].content must be a string, got an array',
    ],
    [
      'a weight other than 0 or 1',
      chat([user('q'), assistant('a', { weight: 0.5 })]),
      'messages[1].weight must be 0 or 1, got number 0.5',
    ],
    [
      'a string weight',
      chat([user('q'), assistant('a', { weight: '1' })]),
      'messages[1].weight must be 0 or 1, got string "1"',
    ],
    [
      'a weight on a user message',
      chat([{ role: 'user', content: 'q', weight: 1 }, assistant('a')]),
      'messages[0].weight is only allowed on assistant messages (role is "user")',
    ],
    [
      'an empty trained assistant message',
      chat([user('q'), assistant('  ')]),
      'messages[1].content is empty; a trained assistant message needs text',
    ],
    [
      'no assistant message',
      chat([user('q')]),
      'no assistant message: there is nothing to train on',
    ],
    [
      'only weight-0 assistant messages',
      chat([user('q'), assistant('a', { weight: 0 })]),
      'every assistant message has "weight": 0: there is nothing to train on',
    ],
    [
      'a completion without prompt',
      '{"completion": "x"}',
      '"prompt" is missing (a "completion" line needs one)',
    ],
    [
      'a prompt without completion',
      '{"prompt": "x"}',
      '"completion" is missing (a "prompt" line needs one)',
    ],
    [
      'a non-string prompt',
      '{"prompt": 1, "completion": "x"}',
      '"prompt" must be a string, got a number',
    ],
    [
      'a non-string completion',
      '{"prompt": "x", "completion": {}}',
      '"completion" must be a string, got an object',
    ],
    ['an empty completion', '{"prompt": "x", "completion": ""}', '"completion" is empty'],
    ['a whitespace completion', '{"prompt": "x", "completion": " \\n"}', '"completion" is empty'],
    ['a non-string text', '{"text": ["a"]}', '"text" must be a string, got an array'],
    ['an empty text', '{"text": ""}', '"text" is empty'],
  ])('reports %s', (_case, badLine, reason) => {
    // Line 2 is blank: line numbers count every line, as an editor does.
    const error = singleError([GOOD_TEXT, '', GOOD_TEXT, badLine, GOOD_TEXT]);
    expect(error.line).toBe(4);
    if (typeof reason === 'string') expect(error.reason).toBe(reason);
    else expect(error.reason).toMatch(reason);
  });

  it('reports a line in another format as mixed, naming the line that set the format', () => {
    const result = validateJsonl([GOOD_CHAT, GOOD_CHAT, GOOD_TEXT, GOOD_PC].join('\n'));
    expect(result).toMatchObject({ ok: false, format: 'mixed', examples: 2, errorCount: 2 });
    expect(result.errors).toEqual([
      {
        line: 3,
        reason:
          'line is in "text" format but the file\'s format is "chat" (set by line 1); a file must use one format',
      },
      {
        line: 4,
        reason:
          'line is in "prompt_completion" format but the file\'s format is "chat" (set by line 1); a file must use one format',
      },
    ]);
  });

  it('sets the format from the first valid line, not from invalid ones', () => {
    const result = validateJsonl(['{"text": 1}', GOOD_PC, GOOD_PC].join('\n'));
    expect(result).toMatchObject({ format: 'prompt_completion', examples: 2, errorCount: 1 });
  });

  it('reports invalid UTF-8 bytes with the line number and still checks other lines', () => {
    const encoder = new TextEncoder();
    const bytes = new Uint8Array([
      ...encoder.encode(`${GOOD_TEXT}\n{"text": "caf`),
      0xc3, // a lead byte with no continuation byte
      ...encoder.encode(`"}\n${GOOD_TEXT}\n{"text": 3}\n`),
    ]);
    const result = validateJsonl(bytes);
    expect(result.errors).toEqual([
      { line: 2, reason: 'line is not valid UTF-8' },
      { line: 4, reason: '"text" must be a string, got a number' },
    ]);
    expect(result.examples).toBe(2);
  });

  it('reports an unpaired surrogate in string input as invalid UTF-8', () => {
    const error = singleError([GOOD_TEXT, `{"text": "a\uD800b"}`]);
    expect(error).toEqual({
      line: 2,
      reason: 'line is not valid UTF-8 (it holds an unpaired surrogate)',
    });
  });

  it('keeps long reasons short', () => {
    const error = singleError([GOOD_TEXT, `{"text": ${'x'.repeat(10_000)}}`]);
    expect(error.reason.length).toBeLessThanOrEqual(200);
  });

  it('caps the reported errors but counts them all', () => {
    const lines = Array.from({ length: 250 }, () => 'not json');
    const result = validateJsonl(lines.join('\n'));
    // 250 line errors plus "0 valid examples".
    expect(result.errorCount).toBe(251);
    expect(result.errors).toHaveLength(MAX_REPORTED_ERRORS);
    expect(result.errors[0]).toEqual({
      line: 0,
      reason: 'file has 0 valid examples; at least 1 required',
    });
    expect(result.errors[1].line).toBe(1);
    expect(result.errors[99].line).toBe(99);
  });
});

describe('validateJsonl: file limits', () => {
  it('rejects an oversized file without parsing it', () => {
    const content = `${GOOD_TEXT}\nnot json\n`;
    const bytes = Buffer.byteLength(content);
    expect(validateJsonl(content, { maxBytes: bytes - 1 })).toEqual({
      ok: false,
      format: null,
      kind: null,
      examples: 0,
      rows: 0,
      errors: [{ line: 0, reason: `file is ${bytes} bytes; the limit is ${bytes - 1} bytes` }],
      errorCount: 1,
    });
    expect(validateJsonl(content, { maxBytes: bytes }).errors).toEqual([
      { line: 2, reason: expect.stringMatching(/^invalid JSON/) },
    ]);
  });

  it('counts bytes, not UTF-16 code units', () => {
    const content = '{"text": "ééé"}';
    expect(validateJsonl(content, { maxBytes: content.length }).ok).toBe(false);
    expect(validateJsonl(content, { maxBytes: Buffer.byteLength(content) }).ok).toBe(true);
  });

  it('rejects too many rows (blank lines do not count)', () => {
    const content = [GOOD_TEXT, '', GOOD_TEXT, GOOD_TEXT].join('\n');
    expect(validateJsonl(content, { maxRows: 3 }).ok).toBe(true);
    const result = validateJsonl(content, { maxRows: 2 });
    expect(result.errors).toEqual([{ line: 0, reason: 'file has 3 rows; the limit is 2 rows' }]);
  });

  it('rejects a line over maxLineBytes by its UTF-8 bytes, naming it, without parsing it (issue 14, item 2)', () => {
    // 'é' is two UTF-8 bytes: a 10-character text of them is 20 bytes plus the JSON frame.
    const wide = JSON.stringify({ text: 'é'.repeat(10) });
    const bytes = Buffer.byteLength(wide);
    expect(bytes).toBe(wide.length + 10);
    const content = [GOOD_TEXT, wide, '{not json but long enough to be over the limit', GOOD_TEXT];
    const result = validateJsonl(`${content.join('\r\n')}\r\n`, { maxLineBytes: bytes - 1 });
    expect(result.errors).toEqual([
      { line: 2, reason: `line is ${bytes} bytes; the limit is ${bytes - 1} bytes a line` },
      // Too long to be parsed: the size is the error, not the JSON.
      { line: 3, reason: `line is 46 bytes; the limit is ${bytes - 1} bytes a line` },
    ]);
    expect(result.rows).toBe(4);
    expect(validateJsonl(content.slice(0, 2).join('\n'), { maxLineBytes: bytes }).ok).toBe(true);
    // Bytes in, as the API passes them: the same answer.
    expect(
      validateJsonl(Buffer.from(content.join('\n')), { maxLineBytes: bytes - 1 }).errorCount,
    ).toBe(2);
    expect(() => validateJsonl(GOOD_TEXT, { maxLineBytes: -1 })).toThrow(RangeError);
  });

  it('rejects fewer valid examples than minExamples', () => {
    const content = [GOOD_TEXT, GOOD_TEXT, 'bad'].join('\n');
    const result = validateJsonl(content, { minExamples: 3 });
    expect(result.errors).toEqual([
      { line: 0, reason: 'file has 2 valid examples; at least 3 required' },
      { line: 3, reason: expect.stringMatching(/^invalid JSON/) },
    ]);
    expect(validateJsonl([GOOD_TEXT, GOOD_TEXT].join('\n'), { minExamples: 2 }).ok).toBe(true);
  });

  it('rejects an empty or blank file', () => {
    for (const content of ['', '\n\n', '  \r\n']) {
      expect(validateJsonl(content).errors).toEqual([
        { line: 0, reason: 'file is empty: it has no JSONL rows' },
      ]);
    }
    expect(validateJsonl('', { minExamples: 0 }).ok).toBe(false);
  });

  it('refuses nonsensical limits loudly (a programming error, not a data error)', () => {
    expect(() => validateJsonl(GOOD_TEXT, { maxRows: -1 })).toThrow(RangeError);
    expect(() => validateJsonl(GOOD_TEXT, { maxBytes: 1.5 })).toThrow(RangeError);
  });
});

describe('parseJsonlExamples', () => {
  it('throws a DatasetValidationError carrying the structured errors', () => {
    const content = [GOOD_TEXT, '{"text": ""}', 'nope'].join('\n');
    let caught: unknown;
    try {
      parseJsonlExamples(content);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(DatasetValidationError);
    const error = caught as DatasetValidationError;
    expect(error.name).toBe('DatasetValidationError');
    expect(error.errorCount).toBe(2);
    expect(error.errors.map((e) => e.line)).toEqual([2, 3]);
    expect(error.result.examples).toBe(1);
    expect(error.message).toMatch(
      /^invalid training file \(2 errors\): line 2: "text" is empty; line 3: invalid JSON/,
    );
  });

  it('applies limits', () => {
    expect(() => parseJsonlExamples(GOOD_TEXT, { minExamples: 2 })).toThrow(
      'file has 1 valid example; at least 2 required',
    );
  });
});

describe('summarizeValidationErrors', () => {
  it('lists the first errors and counts the rest', () => {
    const result = validateJsonl(['x', 'y', 'z', 'w', GOOD_TEXT].join('\n'));
    expect(summarizeValidationErrors(result, 2)).toMatch(
      /^invalid training file \(4 errors\): line 1: invalid JSON.*; line 2: invalid JSON.*; … 2 more$/,
    );
    expect(summarizeValidationErrors(validateJsonl(GOOD_TEXT))).toBe('no errors');
  });
});
