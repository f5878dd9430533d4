import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  buildByteLevelBpeTokenizerJson,
  buildTokenizerConfig,
  createTextTokenizer,
  loadTokenizer,
  stableJson,
  TokenizerLoadError,
  writeTokenizerDir,
  type TextTokenizer,
} from '../src';
import {
  CHATML_TEMPLATE,
  TINY_CHATML_DIR,
  TINY_PLAIN_DIR,
  buildTinyTokenizerJson,
} from './fixtures/tiny-tokenizers';

const ENGLISH = [
  'The quick brown fox jumps over the lazy dog.',
  'What is the capital of France? The capital of France is Paris.',
  "It's 42 degrees; isn't that odd?  Double  spaces,\ttabs\nand newlines\r\n stay exact .",
  '',
  ' leading space, trailing space ',
];
const UNICODE = ['Café naïve résumé', '日本語のテキスト', 'emoji 🦊🧪 and ZWJ 👩‍💻', 'Ωμέγα'];

describe('loadTokenizer on the committed tiny fixtures', () => {
  let plain: TextTokenizer;
  let chatml: TextTokenizer;
  beforeAll(async () => {
    plain = await loadTokenizer(TINY_PLAIN_DIR);
    chatml = await loadTokenizer(TINY_CHATML_DIR);
  });

  it.each([...ENGLISH, ...UNICODE])('round-trips %j exactly', (text) => {
    for (const tokenizer of [plain, chatml]) {
      const ids = tokenizer.encode(text);
      expect(tokenizer.decode(ids)).toBe(text);
    }
  });

  it('compresses English with the learned merges', () => {
    const text = 'The capital of France is Paris.';
    expect(plain.encode(text).length).toBeLessThan(Buffer.byteLength(text) * 0.75);
  });

  it('encodes special-token strings as single ids and adds no special tokens itself', () => {
    const eos = plain.eosTokenId!;
    expect(plain.encode('<|endoftext|>')).toEqual([eos]);
    expect(plain.encode('a<|user|>b')).toEqual([
      ...plain.encode('a'),
      plain.tokenToId('<|user|>'),
      ...plain.encode('b'),
    ]);
    expect(plain.encode('')).toEqual([]);
    expect(plain.decode([])).toBe('');
  });

  it('decodes with or without special tokens', () => {
    const ids = plain.encode('hi<|endoftext|>');
    expect(plain.decode(ids)).toBe('hi<|endoftext|>');
    expect(plain.decode(ids, { skipSpecialTokens: true })).toBe('hi');
  });

  it('rejects ids outside the vocabulary', () => {
    expect(() => plain.decode([plain.vocabSize])).toThrow(RangeError);
    expect(() => plain.decode([-1])).toThrow(RangeError);
    expect(() => plain.decode([1.5])).toThrow(RangeError);
  });

  it('without tokenizer_config.json, guesses special tokens and has no chat template', () => {
    const json = buildTinyTokenizerJson();
    expect(plain.vocabSize).toBe(Object.keys(json.model.vocab).length + json.added_tokens.length);
    expect(plain.eosToken).toBe('<|endoftext|>');
    expect(plain.eosTokenId).toBe(plain.tokenToId('<|endoftext|>'));
    expect(plain.padTokenId).toBe(plain.tokenToId('<|pad|>'));
    expect(plain.bosTokenId).toBeUndefined();
    expect(plain.addBosToken).toBe(false);
    expect(plain.chatTemplate).toBeUndefined();
    expect(plain.specialTokensMap).toEqual({ eos_token: '<|endoftext|>', pad_token: '<|pad|>' });
  });

  it('with tokenizer_config.json, takes its special tokens and chat template', () => {
    expect(chatml.eosToken).toBe('<|im_end|>');
    expect(chatml.eosTokenId).toBe(chatml.tokenToId('<|im_end|>'));
    expect(chatml.padTokenId).toBe(chatml.tokenToId('<|pad|>'));
    // bos_token is null in the config: no guessing.
    expect(chatml.bosTokenId).toBeUndefined();
    expect(chatml.chatTemplate).toBe(CHATML_TEMPLATE);
  });
});

describe('createTextTokenizer', () => {
  const json = buildByteLevelBpeTokenizerJson({ specialTokens: ['<s>', '</s>', '<unk>'] });

  it('adds BOS when the config says add_bos_token', () => {
    const tokenizer = createTextTokenizer(
      json,
      buildTokenizerConfig({ bosToken: '<s>', eosToken: '</s>', addBosToken: true }),
    );
    expect(tokenizer.addBosToken).toBe(true);
    expect(tokenizer.bosTokenId).toBe(256);
    // No pad token: EOS pads.
    expect(tokenizer.padTokenId).toBe(257);
  });

  it('detects a post-processor that adds BOS (Llama style) without the config flag', () => {
    const llamaLike = {
      ...json,
      post_processor: {
        type: 'TemplateProcessing',
        single: [
          { SpecialToken: { id: '<s>', type_id: 0 } },
          { Sequence: { id: 'A', type_id: 0 } },
        ],
        pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
        special_tokens: { '<s>': { id: '<s>', ids: [256], tokens: ['<s>'] } },
      },
    };
    const tokenizer = createTextTokenizer(llamaLike, { bos_token: '<s>', eos_token: '</s>' });
    expect(tokenizer.addBosToken).toBe(true);
    // encode() itself never adds it.
    expect(tokenizer.encode('a')).toEqual([0x61]);
  });

  it('reads special tokens written as AddedToken objects', () => {
    const tokenizer = createTextTokenizer(json, {
      bos_token: { __type: 'AddedToken', content: '<s>', special: true },
      eos_token: { content: '</s>' },
      unk_token: null,
    });
    expect(tokenizer.bosTokenId).toBe(256);
    expect(tokenizer.eosTokenId).toBe(257);
  });

  it('guesses only the special tokens a config leaves out', () => {
    const tokenizer = createTextTokenizer(json, { eos_token: null });
    expect(tokenizer.eosTokenId).toBeUndefined();
    expect(tokenizer.bosTokenId).toBe(256);
    expect(tokenizer.padTokenId).toBe(0);
  });

  it('picks the "default" template from a list of named templates', () => {
    const tokenizer = createTextTokenizer(json, {
      chat_template: [
        { name: 'tool_use', template: 'T' },
        { name: 'default', template: 'D' },
      ],
    });
    expect(tokenizer.chatTemplate).toBe('D');
    expect(() =>
      createTextTokenizer(json, { chat_template: [{ name: 'x', template: 'X' }] }),
    ).toThrow('none is named "default"');
    expect(() => createTextTokenizer(json, { chat_template: 5 })).toThrow(TokenizerLoadError);
  });

  it('fails clearly on a special token that is not in the vocabulary', () => {
    expect(() => createTextTokenizer(json, { pad_token: '<pad>' })).toThrow(
      'pad_token "<pad>" is not in the tokenizer\'s vocabulary',
    );
    expect(() => createTextTokenizer(json, { eos_token: 7 })).toThrow(
      'eos_token must be a string, {"content": string} or null',
    );
  });

  it('fails clearly on files that are not tokenizers', () => {
    expect(() => createTextTokenizer([])).toThrow(TokenizerLoadError);
    expect(() => createTextTokenizer({ model: {} })).toThrow(/cannot build the tokenizer/);
    expect(() => createTextTokenizer(json, 'config')).toThrow(TokenizerLoadError);
  });
});

describe('loadTokenizer file handling', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lorafleet-data-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('names the missing tokenizer.json', async () => {
    await expect(loadTokenizer(dir)).rejects.toThrow(`${join(dir, 'tokenizer.json')} not found`);
  });

  it('names a file that is not JSON', async () => {
    await writeFile(join(dir, 'tokenizer.json'), '{oops');
    const error = await loadTokenizer(dir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TokenizerLoadError);
    expect((error as TokenizerLoadError).file).toBe(join(dir, 'tokenizer.json'));
  });

  it('prefers chat_template.jinja over the config template', async () => {
    await writeTokenizerDir(dir, {
      tokenizerJson: buildTinyTokenizerJson(),
      tokenizerConfig: buildTokenizerConfig({ eosToken: '<|im_end|>', chatTemplate: 'config' }),
    });
    expect((await loadTokenizer(dir)).chatTemplate).toBe('config');
    await writeFile(join(dir, 'chat_template.jinja'), CHATML_TEMPLATE);
    expect((await loadTokenizer(dir)).chatTemplate).toBe(CHATML_TEMPLATE);
  });

  it('writes the same bytes stableJson promises', async () => {
    const tokenizerJson = buildTinyTokenizerJson();
    await writeTokenizerDir(dir, { tokenizerJson });
    expect(await readFile(join(dir, 'tokenizer.json'), 'utf8')).toBe(stableJson(tokenizerJson));
  });
});
