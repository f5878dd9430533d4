import fc from 'fast-check';
import {
  buildByteLevelBpeTokenizerJson,
  buildGenerationPrompt,
  buildTokenizerConfig,
  MAX_CHARS_PER_TOKEN,
  createTextTokenizer,
  encodeExample,
  loadTokenizer,
  maxExampleChars,
  preflightSummary,
  renderChat,
  tokenizeExample,
  type ChatMessage,
  type TextTokenizer,
  type TokenizedExample,
  type TrainingExample,
} from '../src';
import { TINY_CHATML_DIR, TINY_PLAIN_DIR } from './fixtures/tiny-tokenizers';

const BIG = { maxSeqLength: 10_000 };

/** The text of the tokens the loss covers, and of those it does not. */
function split(tokenizer: TextTokenizer, tokenized: TokenizedExample) {
  const pick = (bit: number) =>
    tokenizer.decode(tokenized.inputIds.filter((_, t) => tokenized.lossMask[t] === bit));
  return { trained: pick(1), context: pick(0) };
}

describe('tokenizeExample', () => {
  let plain: TextTokenizer;
  let chatml: TextTokenizer;
  let withBos: TextTokenizer;
  beforeAll(async () => {
    plain = await loadTokenizer(TINY_PLAIN_DIR);
    chatml = await loadTokenizer(TINY_CHATML_DIR);
    withBos = createTextTokenizer(
      buildByteLevelBpeTokenizerJson({ specialTokens: ['<s>', '</s>'] }),
      buildTokenizerConfig({ bosToken: '<s>', eosToken: '</s>', addBosToken: true }),
    );
  });

  describe('prompt/completion', () => {
    const example: TrainingExample = {
      format: 'prompt_completion',
      prompt: 'What is the capital of France?',
      completion: ' Paris.',
    };

    it('masks the prompt and trains on the completion and EOS', () => {
      const tokenized = tokenizeExample(example, plain, BIG);
      const promptIds = plain.encode(example.prompt);
      const completionIds = plain.encode(example.completion);
      expect(tokenized.inputIds).toEqual([...promptIds, ...completionIds, plain.eosTokenId]);
      expect(tokenized.lossMask).toEqual([
        ...promptIds.map(() => 0),
        ...completionIds.map(() => 1),
        1,
      ]);
      expect(split(plain, tokenized)).toEqual({
        trained: ' Paris.<|endoftext|>',
        context: example.prompt,
      });
      expect(tokenized.truncated).toBe(false);
    });

    it('starts with an untrained BOS when the tokenizer adds one', () => {
      const tokenized = tokenizeExample(example, withBos, BIG);
      expect(tokenized.inputIds[0]).toBe(withBos.bosTokenId);
      expect(tokenized.lossMask[0]).toBe(0);
      expect(split(withBos, tokenized).trained).toBe(' Paris.</s>');
    });

    it('never trains position 0, which nothing predicts', () => {
      const tokenized = tokenizeExample({ ...example, prompt: '' }, plain, BIG);
      expect(tokenized.lossMask[0]).toBe(0);
      expect(tokenized.lossMask.slice(1).every((bit) => bit === 1)).toBe(true);
    });
  });

  describe('text', () => {
    it('trains on every token after the first, EOS included', () => {
      const text = 'Once upon a time, a fox.';
      const tokenized = tokenizeExample({ format: 'text', text }, plain, BIG);
      expect(tokenized.inputIds).toEqual([...plain.encode(text), plain.eosTokenId]);
      expect(tokenized.lossMask).toEqual([0, ...tokenized.inputIds.slice(1).map(() => 1)]);
    });

    it('keeps BOS as untrained context and trains the first text token', () => {
      const tokenized = tokenizeExample({ format: 'text', text: 'ab' }, withBos, BIG);
      expect(tokenized.inputIds).toEqual([withBos.bosTokenId, 0x61, 0x62, withBos.eosTokenId]);
      expect(tokenized.lossMask).toEqual([0, 1, 1, 1]);
    });
  });

  describe('chat', () => {
    const messages: ChatMessage[] = [
      { role: 'system', content: 'You are terse.', weight: 0 },
      { role: 'user', content: 'What is two plus two?', weight: 0 },
      { role: 'assistant', content: 'Five.', weight: 0 },
      { role: 'user', content: 'Try again.', weight: 0 },
      { role: 'assistant', content: 'Four.', weight: 1 },
    ];
    const example: TrainingExample = { format: 'chat', messages };

    it('with the plain template: trains assistant turns with weight 1 and their EOS only', () => {
      const tokenized = tokenizeExample(example, plain, BIG);
      expect(plain.decode(tokenized.inputIds)).toBe(renderChat(messages, plain));
      expect(split(plain, tokenized).trained).toBe('Four.<|endoftext|>');
    });

    it('with a ChatML template from tokenizer_config.json', () => {
      const tokenized = tokenizeExample(example, chatml, BIG);
      expect(chatml.decode(tokenized.inputIds)).toBe(renderChat(messages, chatml));
      expect(split(chatml, tokenized).trained).toBe('Four.<|im_end|>\n');
      // The template's markers are single special tokens, all masked.
      const imStart = chatml.tokenToId('<|im_start|>');
      tokenized.inputIds.forEach((id, t) => {
        if (id === imStart) expect(tokenized.lossMask[t]).toBe(0);
      });
    });

    it('trains every assistant turn when none has weight 0', () => {
      const all = messages.map((m) => (m.role === 'assistant' ? { ...m, weight: 1 as const } : m));
      const tokenized = tokenizeExample({ format: 'chat', messages: all }, plain, BIG);
      expect(split(plain, tokenized).trained).toBe('Five.<|endoftext|>Four.<|endoftext|>');
    });

    it('the prompt side ends exactly where generation starts', () => {
      const tokenized = tokenizeExample(example, plain, BIG);
      const firstTrained = tokenized.lossMask.indexOf(1);
      const context = plain.decode(tokenized.inputIds.slice(0, firstTrained));
      expect(context).toBe(renderChat(messages.slice(0, 4), plain, { addGenerationPrompt: true }));
    });
  });

  describe('truncation', () => {
    const example: TrainingExample = {
      format: 'prompt_completion',
      prompt: 'The quick brown fox',
      completion: ' jumps over the lazy dog.',
    };

    it('cuts the tail at maxSeqLength and says so', () => {
      const full = tokenizeExample(example, plain, BIG);
      const cut = tokenizeExample(example, plain, { maxSeqLength: 6 });
      expect(cut).toEqual({
        inputIds: full.inputIds.slice(0, 6),
        lossMask: full.lossMask.slice(0, 6),
        truncated: true,
      });
      const exact = tokenizeExample(example, plain, { maxSeqLength: full.inputIds.length });
      expect(exact.truncated).toBe(false);
    });

    it('can leave an example with nothing to train when the prompt fills the window', () => {
      const promptLength = plain.encode(example.prompt).length;
      const cut = tokenizeExample(example, plain, { maxSeqLength: promptLength });
      expect(cut.lossMask.every((bit) => bit === 0)).toBe(true);
    });

    describe('by characters before tokenizing (issue 14, item 2)', () => {
      /** `tokenizer`, recording the longest text it was asked to encode. */
      function spying(tokenizer: TextTokenizer) {
        const seen = { longest: 0 };
        const spy = Object.create(tokenizer) as TextTokenizer;
        spy.encode = (text: string) => {
          seen.longest = Math.max(seen.longest, text.length);
          return tokenizer.encode(text);
        };
        return { spy, seen };
      }
      const maxSeqLength = 16;
      const cap = maxExampleChars(maxSeqLength);
      const huge = 'many words here '.repeat(400_000); // 6.4 M characters

      it('never tokenizes more than maxExampleChars of a huge example, and keeps the same tokens', () => {
        expect(cap).toBe((16 + 16) * MAX_CHARS_PER_TOKEN);
        for (const example of [
          { format: 'prompt_completion', prompt: huge, completion: ' done.' },
          { format: 'prompt_completion', prompt: 'Q: ', completion: huge },
          { format: 'text', text: huge },
        ] as TrainingExample[]) {
          const { spy, seen } = spying(plain);
          const cut = tokenizeExample(example, spy, { maxSeqLength });
          expect(seen.longest).toBeLessThanOrEqual(cap);
          // The same ids and mask as tokenizing the whole text and cutting the tokens: here a
          // text three caps long stands for the whole, which the old path had to tokenize.
          const shorter = JSON.parse(
            JSON.stringify(example).replace(huge, huge.slice(0, 3 * cap)),
          ) as TrainingExample;
          const whole = encodeExample(shorter, plain);
          expect(cut).toEqual({
            inputIds: whole.inputIds.slice(0, maxSeqLength),
            lossMask: whole.lossMask.slice(0, maxSeqLength),
            truncated: true,
          });
        }
      });

      it('cuts the tail of a chat: a huge message is capped before the template renders it', () => {
        const messages: ChatMessage[] = [
          { role: 'user', content: huge, weight: 0 },
          { role: 'assistant', content: 'Sure.', weight: 1 },
        ];
        const { spy, seen } = spying(chatml);
        const cut = tokenizeExample({ format: 'chat', messages }, spy, { maxSeqLength });
        expect(seen.longest).toBeLessThanOrEqual(cap);
        expect(cut.truncated).toBe(true);
        expect(cut.inputIds).toHaveLength(maxSeqLength);
        // The prompt fills the window: the assistant turn is cut, so nothing trains.
        expect(cut.lossMask.every((bit) => bit === 0)).toBe(true);
        const trainedFirst = tokenizeExample(
          { format: 'chat', messages: [{ role: 'assistant', content: huge, weight: 1 }] },
          chatml,
          { maxSeqLength },
        );
        expect(trainedFirst.lossMask.slice(1).some((bit) => bit === 1)).toBe(true);
      });

      it('reports the cut in the pre-flight: truncated, a target lost, nothing left to train', () => {
        const summary = preflightSummary(
          [
            { format: 'prompt_completion', prompt: huge, completion: ' done.' },
            { format: 'prompt_completion', prompt: 'Q: ', completion: ' A.' },
          ],
          plain,
          { maxSeqLength, batchSize: 1, epochs: 1 },
        );
        expect(summary).toMatchObject({
          truncatedExamples: 1,
          examplesWithTruncatedTargets: 1,
          examplesWithoutTrainableTokens: 1,
          longestKeptTokens: maxSeqLength,
        });
      });

      it('never splits a surrogate pair at the cut', () => {
        const emoji = '😀'.repeat(cap); // two UTF-16 units each
        const { spy, seen } = spying(plain);
        tokenizeExample({ format: 'text', text: `x${emoji}` }, spy, { maxSeqLength });
        expect(seen.longest).toBe(cap - 1);
        const cut = encodeExample({ format: 'text', text: `x${emoji}` }, plain, { maxChars: 4 });
        expect(plain.decode(cut.inputIds)).toBe('x😀');
        expect(cut).toMatchObject({ charsCut: true, targetsCut: true });
      });
    });

    it('rejects a non-positive maxSeqLength', () => {
      expect(() => tokenizeExample(example, plain, { maxSeqLength: 0 })).toThrow(RangeError);
      expect(() => tokenizeExample(example, plain, { maxSeqLength: 2.5 })).toThrow(RangeError);
    });
  });

  it('property: ids decode to the rendered chat and the loss covers trained turns only', () => {
    const turn = fc
      .string({ unit: 'grapheme', minLength: 1, maxLength: 12 })
      .filter((s) => s.trim() !== '');
    const chat = fc.array(fc.tuple(turn, turn, fc.boolean()), { minLength: 1, maxLength: 3 });
    fc.assert(
      fc.property(chat, fc.constantFrom('plain', 'chatml'), (turns, which) => {
        const tokenizer = which === 'plain' ? plain : chatml;
        const end = which === 'plain' ? '<|endoftext|>' : '<|im_end|>\n';
        // The last assistant turn is always trained, as the validator requires one.
        const messages: ChatMessage[] = turns.flatMap(([question, answer, trained], i) => [
          { role: 'user' as const, content: question, weight: 0 as const },
          {
            role: 'assistant' as const,
            content: answer,
            weight: trained || i === turns.length - 1 ? (1 as const) : (0 as const),
          },
        ]);
        const tokenized = tokenizeExample({ format: 'chat', messages }, tokenizer, BIG);
        expect(tokenizer.decode(tokenized.inputIds)).toBe(renderChat(messages, tokenizer));
        const expected = messages
          .filter((m) => m.role === 'assistant' && m.weight === 1)
          .map((m) => m.content + end)
          .join('');
        expect(split(tokenizer, tokenized).trained).toBe(expected);
      }),
      { numRuns: 100 },
    );
  });
});

describe('buildGenerationPrompt', () => {
  let plain: TextTokenizer;
  beforeAll(async () => {
    plain = await loadTokenizer(TINY_PLAIN_DIR);
  });

  it('prompts a chat up to its last trained assistant turn', () => {
    const messages: ChatMessage[] = [
      { role: 'user', content: 'Hi', weight: 0 },
      { role: 'assistant', content: 'Hello!', weight: 1 },
      { role: 'user', content: 'Bye', weight: 0 },
      { role: 'assistant', content: 'ignored', weight: 0 },
    ];
    const { promptIds, reference } = buildGenerationPrompt({ format: 'chat', messages }, plain);
    expect(plain.decode(promptIds)).toBe('<|user|>\nHi\n<|assistant|>\n');
    expect(reference).toBe('Hello!');
  });

  it('prompts prompt/completion with the prompt and text with its first half', () => {
    const pc = buildGenerationPrompt(
      { format: 'prompt_completion', prompt: 'Q:', completion: ' A' },
      plain,
    );
    expect(pc).toEqual({ promptIds: plain.encode('Q:'), reference: ' A' });
    const text = buildGenerationPrompt({ format: 'text', text: 'one two three four' }, plain);
    expect(plain.decode(text.promptIds) + text.reference).toBe('one two three four');
  });
});
