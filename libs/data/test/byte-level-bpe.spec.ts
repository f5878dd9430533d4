import fc from 'fast-check';
import {
  buildByteLevelBpeTokenizerJson,
  createTextTokenizer,
  learnByteLevelBpeMerges,
  toByteLevel,
} from '../src';
import { TINY_CORPUS } from './fixtures/tiny-tokenizers';

describe('toByteLevel', () => {
  it('maps bytes to GPT-2 byte-level characters', () => {
    expect(toByteLevel('Hi there')).toBe('HiĠthere');
    expect(toByteLevel('a\nb')).toBe('aĊb');
    // é is two UTF-8 bytes, 0xC3 0xA9, both printable Latin-1.
    expect(toByteLevel('é')).toBe('Ã©');
  });
});

describe('learnByteLevelBpeMerges', () => {
  it('merges the most frequent pair first and breaks ties by sort order', () => {
    // Words: "ab" ×1, " ab" ×2, " cd" ×3. Pairs (a,b), (c,d) and (Ġ,c) all occur 3 times and
    // sort in that order; then (Ġ,cd) ×3 beats (Ġ,ab) ×2.
    expect(learnByteLevelBpeMerges(['ab ab ab cd cd cd'], 3)).toEqual([
      ['a', 'b'],
      ['c', 'd'],
      ['Ġ', 'cd'],
    ]);
  });

  it('stops early when no pair occurs twice', () => {
    expect(learnByteLevelBpeMerges(['abc'], 10)).toEqual([]);
    expect(learnByteLevelBpeMerges(TINY_CORPUS, 5)).toHaveLength(5);
  });

  it('is deterministic', () => {
    expect(learnByteLevelBpeMerges(TINY_CORPUS, 50)).toEqual(
      learnByteLevelBpeMerges([...TINY_CORPUS], 50),
    );
  });
});

describe('buildByteLevelBpeTokenizerJson', () => {
  it('lays out ids as bytes, then merges, then special tokens', () => {
    const json = buildByteLevelBpeTokenizerJson({
      merges: [
        ['Ġ', 't'],
        ['h', 'e'],
        ['Ġt', 'he'],
      ],
      specialTokens: ['<|endoftext|>', '<|pad|>'],
    });
    expect(json.model.vocab.a).toBe(0x61);
    expect(json.model.vocab['Ġ']).toBe(0x20);
    expect(json.model.vocab['Ġt']).toBe(256);
    expect(json.model.vocab['Ġthe']).toBe(258);
    expect(json.added_tokens.map((t) => [t.content, t.id])).toEqual([
      ['<|endoftext|>', 259],
      ['<|pad|>', 260],
    ]);
    const tokenizer = createTextTokenizer(json);
    expect(tokenizer.encode(' the')).toEqual([258]);
    expect(tokenizer.vocabSize).toBe(261);
  });

  it('gives a symbol built by two merges one id', () => {
    const json = buildByteLevelBpeTokenizerJson({
      merges: [
        ['a', 'b'],
        ['b', 'c'],
        ['ab', 'c'],
        ['a', 'bc'],
      ],
      specialTokens: [],
    });
    expect(json.model.merges).toHaveLength(4);
    expect(Object.keys(json.model.vocab)).toHaveLength(259);
  });

  it('rejects merges out of order and bad special tokens', () => {
    expect(() =>
      buildByteLevelBpeTokenizerJson({ merges: [['Ġt', 'he']], specialTokens: [] }),
    ).toThrow('uses a symbol that no earlier merge produced');
    expect(() => buildByteLevelBpeTokenizerJson({ specialTokens: ['x', 'x'] })).toThrow(
      'listed twice',
    );
    expect(() => buildByteLevelBpeTokenizerJson({ specialTokens: [''] })).toThrow('empty');
  });

  it('round-trips any Unicode text through encode and decode', () => {
    const tokenizer = createTextTokenizer(
      buildByteLevelBpeTokenizerJson({
        merges: learnByteLevelBpeMerges(TINY_CORPUS, 64),
        specialTokens: ['<|endoftext|>'],
      }),
    );
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 60 }), (text) => {
        expect(tokenizer.decode(tokenizer.encode(text))).toBe(text);
      }),
      { numRuns: 300 },
    );
  });
});
