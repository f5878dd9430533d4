import fc from 'fast-check';
import {
  DatasetValidationError,
  MAX_REPORTED_ERRORS,
  parseJsonlExamples,
  validateJsonl,
  type JsonlValidationResult,
  type TrainingExample,
} from '../src';

/** Invariants every answer must satisfy, whatever the input. */
function expectWellFormed(result: JsonlValidationResult, lineCount: number): void {
  expect(result.ok).toBe(result.errorCount === 0);
  expect(result.errors.length).toBeLessThanOrEqual(MAX_REPORTED_ERRORS);
  expect(result.errorCount).toBeGreaterThanOrEqual(result.errors.length);
  expect(result.examples).toBeLessThanOrEqual(result.rows);
  expect([null, 'chat', 'prompt_completion', 'text', 'mixed']).toContain(result.format);
  let previousLine = 0;
  for (const error of result.errors) {
    expect(Number.isInteger(error.line)).toBe(true);
    expect(error.line).toBeGreaterThanOrEqual(previousLine);
    expect(error.line).toBeLessThanOrEqual(lineCount);
    expect(typeof error.reason).toBe('string');
    expect(error.reason.length).toBeGreaterThan(0);
    previousLine = error.line;
  }
}

/** Each non-blank row is either an example or exactly one line error. */
function expectRowsAccountedFor(result: JsonlValidationResult): void {
  const fileErrors = result.errors.filter((e) => e.line === 0).length;
  expect(result.examples + result.errorCount - fileErrors).toBe(result.rows);
}

describe('validateJsonl fuzz', () => {
  it('never throws on arbitrary strings and answers with structured errors', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 400 }), (content) => {
        const result = validateJsonl(content);
        expectWellFormed(result, content.split('\n').length);
        expectRowsAccountedFor(result);
      }),
      { numRuns: 300 },
    );
  });

  it('never throws on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), (bytes) => {
        const result = validateJsonl(bytes);
        const lineCount = bytes.reduce((n, b) => (b === 0x0a ? n + 1 : n), 1);
        expectWellFormed(result, lineCount);
        expectRowsAccountedFor(result);
      }),
      { numRuns: 300 },
    );
  });

  it('never throws on arbitrary JSON values per line, and limits never break the invariants', () => {
    const limits = fc.record(
      {
        maxBytes: fc.nat({ max: 2000 }),
        maxRows: fc.nat({ max: 10 }),
        minExamples: fc.nat({ max: 10 }),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(fc.array(fc.jsonValue(), { maxLength: 12 }), limits, (values, lim) => {
        const content = values.map((v) => JSON.stringify(v)).join('\n');
        const result = validateJsonl(content, lim);
        expectWellFormed(result, values.length);
        if (lim.maxBytes === undefined || Buffer.byteLength(content) <= lim.maxBytes) {
          expectRowsAccountedFor(result);
        }
      }),
      { numRuns: 300 },
    );
  });

  // Near-misses reach deep into the checks: right keys, random value types.
  const anyValue = fc.oneof(
    fc.string({ maxLength: 8 }),
    fc.constantFrom('user', 'assistant', 'system', 'tool', '', ' '),
    fc.integer({ min: -1, max: 2 }),
    fc.constant(null),
    fc.boolean(),
    fc.jsonValue({ maxDepth: 2 }),
  );
  const nearMissMessage = fc.record(
    { role: anyValue, content: anyValue, weight: anyValue },
    { requiredKeys: [] },
  );
  const nearMissLine = fc.oneof(
    fc.record({ messages: fc.oneof(fc.array(nearMissMessage, { maxLength: 4 }), anyValue) }),
    fc.record({ prompt: anyValue, completion: anyValue }, { requiredKeys: [] }),
    fc.record({ text: anyValue }),
    fc.dictionary(fc.constantFrom('messages', 'prompt', 'completion', 'text', 'x'), anyValue),
  );

  it('answers near-miss lines with one error or one example each; parse agrees', () => {
    fc.assert(
      fc.property(fc.array(nearMissLine, { minLength: 1, maxLength: 8 }), (lines) => {
        const content = lines.map((l) => JSON.stringify(l)).join('\n');
        const result = validateJsonl(content);
        expectWellFormed(result, lines.length);
        expectRowsAccountedFor(result);
        if (result.ok) {
          expect(parseJsonlExamples(content)).toHaveLength(result.examples);
        } else {
          expect(() => parseJsonlExamples(content)).toThrow(DatasetValidationError);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('accepts every well-formed file and parses back what was written', () => {
    const content = fc
      .string({ unit: 'grapheme', minLength: 1, maxLength: 20 })
      .filter((s) => s.trim() !== '');
    const chatExample: fc.Arbitrary<TrainingExample> = fc
      .tuple(
        fc.array(
          fc.record({
            role: fc.constantFrom('system' as const, 'user' as const),
            content: fc.string({ unit: 'grapheme', maxLength: 20 }),
          }),
          { maxLength: 3 },
        ),
        content,
      )
      .map(([context, answer]) => ({
        format: 'chat',
        messages: [
          ...context.map((m) => ({ ...m, weight: 0 as const })),
          { role: 'assistant' as const, content: answer, weight: 1 as const },
        ],
      }));
    const pcExample: fc.Arbitrary<TrainingExample> = fc
      .tuple(fc.string({ unit: 'grapheme', maxLength: 20 }), content)
      .map(([prompt, completion]) => ({ format: 'prompt_completion', prompt, completion }));
    const textExample: fc.Arbitrary<TrainingExample> = content.map((text) => ({
      format: 'text',
      text,
    }));
    const file = fc.oneof(
      fc.array(chatExample, { minLength: 1, maxLength: 5 }),
      fc.array(pcExample, { minLength: 1, maxLength: 5 }),
      fc.array(textExample, { minLength: 1, maxLength: 5 }),
    );
    const toLine = (example: TrainingExample): string => {
      switch (example.format) {
        case 'chat':
          return JSON.stringify({
            messages: example.messages.map(({ role, content: c }) => ({ role, content: c })),
          });
        case 'prompt_completion':
          return JSON.stringify({ prompt: example.prompt, completion: example.completion });
        case 'text':
          return JSON.stringify({ text: example.text });
      }
    };
    fc.assert(
      fc.property(file, (examples) => {
        const jsonl = `${examples.map(toLine).join('\n')}\n`;
        const result = validateJsonl(jsonl);
        expect(result).toMatchObject({ ok: true, examples: examples.length });
        expect(parseJsonlExamples(jsonl)).toEqual(examples);
      }),
      { numRuns: 200 },
    );
  });
});
