import fc from 'fast-check';
import {
  buildByteLevelBpeTokenizerJson,
  buildGenerationPrompt,
  buildTokenizerConfig,
  createTextTokenizer,
  loadTokenizer,
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
