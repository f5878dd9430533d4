/**
 * Tokenizers and chat templates as the issue-16 families ship them, built here by hand (no
 * downloads) and checked against hand-written expectations, not against the loader itself:
 *
 * - SentencePiece-style BPE with byte fallback (Llama 2, Mistral, Phi-3, Gemma): `▁` marks
 *   a word start, characters outside the vocabulary become their UTF-8 bytes `<0xNN>`.
 * - Byte-level BPE with added special tokens (Qwen): the committed tiny-chatml fixture.
 * - `generation_config.json`'s `eos_token_id` lists, and the chat templates' assistant spans
 *   that the loss trains on (Mistral `[INST]`, Phi-3 `<|user|>…<|end|>`, Gemma
 *   `<start_of_turn>`, Qwen ChatML).
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import {
  TokenizerLoadError,
  createTextTokenizer,
  loadTokenizer,
  renderChatSegments,
  type ChatMessage,
  type ChatTemplateSource,
  type TextTokenizer,
} from '../src';
import { TINY_CHATML_DIR } from './fixtures/tiny-tokenizers';

const BYTE_BASE = 3; // <0x00> follows <unk>, <s>, </s>
const byteId = (b: number) => BYTE_BASE + b;

/** Word pieces after the 256 byte tokens, and the merges that build them, by rank. */
const PIECES = ['▁', 'h', 'i', 'e', 'l', 'o', '▁h', '▁hi', 'll', '▁he', '▁hell', '▁hello'];
const MERGES = ['▁ h', '▁h i', 'l l', '▁h e', '▁he ll', '▁hell o'];
const pieceId = (piece: string) => BYTE_BASE + 256 + PIECES.indexOf(piece);

/** Control tokens of the families' chat formats, after the pieces. */
const CONTROL = [
  '[INST]',
  '[/INST]',
  '<|user|>',
  '<|assistant|>',
  '<|end|>',
  '<start_of_turn>',
  '<end_of_turn>',
];
const controlId = (token: string) => BYTE_BASE + 256 + PIECES.length + CONTROL.indexOf(token);

/** A Llama-2/Mistral-style tokenizer.json (non-legacy Metaspace, prepend on the first section). */
function sentencePieceTokenizerJson(): Record<string, unknown> {
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  for (let b = 0; b < 256; b++) {
    vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = byteId(b);
  }
  for (const piece of PIECES) vocab[piece] = pieceId(piece);
  const special = (id: number, content: string) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [
      special(0, '<unk>'),
      special(1, '<s>'),
      special(2, '</s>'),
      ...CONTROL.map((t) => special(controlId(t), t)),
    ],
    normalizer: null,
    pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: false },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: '<s>', type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      vocab,
      merges: MERGES,
    },
  };
}

function sentencePiece(config: Record<string, unknown>, generationConfig?: unknown) {
  return createTextTokenizer(sentencePieceTokenizerJson(), config, { generationConfig });
}

const LLAMA_CONFIG = { bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>', pad_token: null };

describe('SentencePiece-style BPE with byte fallback (Llama 2 / Mistral / Phi-3 / Gemma)', () => {
  let tokenizer: TextTokenizer;
  beforeAll(() => {
    tokenizer = sentencePiece(LLAMA_CONFIG);
  });

  it('marks word starts with ▁ and applies the merges by rank', () => {
    expect(tokenizer.encode('hi')).toEqual([pieceId('▁hi')]);
    expect(tokenizer.encode('hello')).toEqual([pieceId('▁hello')]);
    expect(tokenizer.encode('hello hi')).toEqual([pieceId('▁hello'), pieceId('▁hi')]);
  });

  it('falls back to UTF-8 byte tokens for characters outside the vocabulary', () => {
    // é is C3 A9 in UTF-8; € is E2 82 AC.
    expect(tokenizer.encode('hi é')).toEqual([
      pieceId('▁hi'),
      pieceId('▁'),
      byteId(0xc3),
      byteId(0xa9),
    ]);
    expect(tokenizer.encode('€')).toEqual([pieceId('▁'), byteId(0xe2), byteId(0x82), byteId(0xac)]);
    expect(tokenizer.decode(tokenizer.encode('hi é €'))).toBe('hi é €');
  });

  it('keeps control tokens whole, and adds BOS as the post-processor says', () => {
    expect(tokenizer.encode('[INST]hi[/INST]')).toEqual([
      controlId('[INST]'),
      pieceId('h'),
      pieceId('i'),
      controlId('[/INST]'),
    ]);
    expect(tokenizer.addBosToken).toBe(true);
    expect(tokenizer.bosTokenId).toBe(1);
    expect(tokenizer.eosTokenId).toBe(2);
    expect(tokenizer.padTokenId).toBe(2); // pad_token null: EOS pads (always masked)
  });
});

describe('generation_config.json eos_token_id', () => {
  it('adds the end-of-turn ids a chat model stops on (Phi-3: <|end|>, Gemma: <end_of_turn>)', () => {
    const phi3 = sentencePiece(LLAMA_CONFIG, { eos_token_id: [2, controlId('<|end|>')] });
    expect(phi3.stopTokenIds).toEqual([2, controlId('<|end|>')]);
    const gemma = sentencePiece(LLAMA_CONFIG, { eos_token_id: controlId('<end_of_turn>') });
    expect(gemma.stopTokenIds).toEqual([2, controlId('<end_of_turn>')]);
    expect(sentencePiece(LLAMA_CONFIG).stopTokenIds).toEqual([2]);
  });

  it('refuses an id outside the vocabulary or a malformed value, naming the file', () => {
    expect(() => sentencePiece(LLAMA_CONFIG, { eos_token_id: [2, 99999] })).toThrow(
      /generation_config.json eos_token_id 99999 is outside the vocabulary/,
    );
    expect(() => sentencePiece(LLAMA_CONFIG, { eos_token_id: ['</s>'] })).toThrow(
      TokenizerLoadError,
    );
  });

  it('is read from the model directory by loadTokenizer (Qwen2.5-Instruct: both ends)', async () => {
    // The fixture's EOS is <|im_end|>; Qwen2.5-Instruct's generation config adds <|endoftext|>.
    const base = await loadTokenizer(TINY_CHATML_DIR);
    const imEnd = base.tokenToId('<|im_end|>')!;
    const endOfText = base.tokenToId('<|endoftext|>')!;
    expect(base.eosTokenId).toBe(imEnd);
    const dir = await mkdtemp(join(tmpdir(), 'lorafleet-tok-'));
    try {
      for (const file of ['tokenizer.json', 'tokenizer_config.json']) {
        await writeFile(join(dir, file), await readFile(join(TINY_CHATML_DIR, file)));
      }
      await writeFile(
        join(dir, 'generation_config.json'),
        JSON.stringify({ eos_token_id: [endOfText, imEnd] }),
      );
      const tokenizer = await loadTokenizer(dir);
      expect(tokenizer.stopTokenIds).toEqual([imEnd, endOfText]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('byte-level BPE with added special tokens (Qwen)', () => {
  it('encodes ChatML control tokens as single ids and any byte without an unknown token', async () => {
    const qwen = await loadTokenizer(TINY_CHATML_DIR);
    const start = qwen.tokenToId('<|im_start|>')!;
    const end = qwen.tokenToId('<|im_end|>')!;
    const ids = qwen.encode('<|im_start|>user\né€<|im_end|>');
    expect(ids[0]).toBe(start);
    expect(ids[ids.length - 1]).toBe(end);
    expect(ids.filter((id) => id === start || id === end)).toHaveLength(2);
    expect(qwen.decode(ids)).toBe('<|im_start|>user\né€<|im_end|>');
  });
});

/** The text of each trained span. */
function trainedText(messages: ChatMessage[], source: ChatTemplateSource): string[] {
  return renderChatSegments(messages, source)
    .filter((s) => s.trainable)
    .map((s) => s.text);
}

const CHAT: ChatMessage[] = [
  { role: 'user', content: 'a?', weight: 0 },
  { role: 'assistant', content: 'one', weight: 1 },
  { role: 'user', content: 'b?', weight: 0 },
  { role: 'assistant', content: 'two', weight: 1 },
];

describe("loss spans follow each family's chat template", () => {
  it('Mistral [INST]: the answer and its </s>', () => {
    const mistral: ChatTemplateSource = {
      chatTemplate: [
        '{{- bos_token }}',
        '{%- for message in messages %}',
        "{%- if message['role'] == 'user' %}{{- '[INST] ' + message['content'] + ' [/INST]' }}",
        "{%- else %}{{- ' ' + message['content'] + eos_token }}{%- endif %}",
        '{%- endfor %}',
      ].join('\n'),
      specialTokensMap: { bos_token: '<s>', eos_token: '</s>' },
    };
    expect(trainedText(CHAT, mistral)).toEqual([' one</s>', ' two</s>']);
  });

  it('Phi-3 <|user|>…<|end|>: the answer and its <|end|>', () => {
    const phi3: ChatTemplateSource = {
      chatTemplate: [
        '{% for message in messages %}',
        "{{ '<|' + message['role'] + '|>' + '\\n' + message['content'] + '<|end|>' + '\\n' }}",
        '{% endfor %}',
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}",
      ].join(''),
      specialTokensMap: { eos_token: '<|endoftext|>' },
    };
    expect(trainedText(CHAT, phi3)).toEqual(['one<|end|>\n', 'two<|end|>\n']);
  });

  it("Gemma <start_of_turn>model: the answer and its <end_of_turn> (role 'model')", () => {
    const gemma: ChatTemplateSource = {
      chatTemplate: [
        '{{ bos_token }}',
        '{% for message in messages %}',
        "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}",
        "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}",
        '{% endfor %}',
        "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}",
      ].join(''),
      specialTokensMap: { bos_token: '<bos>', eos_token: '<eos>' },
    };
    expect(trainedText(CHAT, gemma)).toEqual(['one<end_of_turn>\n', 'two<end_of_turn>\n']);
  });

  it('Qwen ChatML: the answer and its <|im_end|>', async () => {
    const qwen = await loadTokenizer(TINY_CHATML_DIR);
    expect(trainedText(CHAT, qwen)).toEqual(['one<|im_end|>\n', 'two<|im_end|>\n']);
  });
});
