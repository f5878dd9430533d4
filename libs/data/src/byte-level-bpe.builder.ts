import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Builds Hugging Face `tokenizer.json` files for byte-level BPE, the GPT-2 scheme: text is split
 * with GPT-2's regex, each piece's UTF-8 bytes are mapped to printable characters, and learned
 * merges join them. All 256 bytes are in the vocabulary, so every string encodes and decodes back
 * exactly. Used to ship tiny test models; the output also loads in Python `tokenizers`.
 */

/** One entry of `added_tokens` in a Hugging Face `tokenizer.json`. */
export interface HfAddedToken {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

/** A merge in the byte-level alphabet, e.g. `['Ġ', 't']` for " t". */
export type BpeMerge = readonly [string, string];

/** The `tokenizer.json` produced by {@link buildByteLevelBpeTokenizerJson}. */
export interface ByteLevelBpeTokenizerJson {
  version: '1.0';
  truncation: null;
  padding: null;
  added_tokens: HfAddedToken[];
  normalizer: null;
  pre_tokenizer: ByteLevelComponent;
  post_processor: ByteLevelComponent;
  decoder: ByteLevelComponent;
  model: {
    type: 'BPE';
    dropout: null;
    unk_token: null;
    continuing_subword_prefix: string;
    end_of_word_suffix: string;
    fuse_unk: boolean;
    byte_fallback: boolean;
    ignore_merges: boolean;
    vocab: Record<string, number>;
    merges: [string, string][];
  };
}

interface ByteLevelComponent {
  type: 'ByteLevel';
  add_prefix_space: boolean;
  trim_offsets: boolean;
  use_regex: boolean;
}

export interface ByteLevelBpeOptions {
  /** Merges in rank order (see {@link learnByteLevelBpeMerges}); none gives a pure byte vocab. */
  merges?: readonly BpeMerge[];
  /**
   * Special tokens, appended after the byte and merge ids in the order given. They are matched
   * whole in input text before BPE runs, so chat-template markers cost one token each.
   */
  specialTokens: readonly string[];
}

/** GPT-2's pre-tokenizer pattern, as `@huggingface/tokenizers` applies it for ByteLevel. */
const GPT2_SPLIT_PATTERN =
  /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/**
 * GPT-2's `bytes_to_unicode`: printable Latin-1 bytes map to themselves, the rest to U+0100
 * onwards, so no byte becomes whitespace or a control character inside vocab strings.
 */
const BYTE_TO_CHAR: readonly string[] = (() => {
  const printable = (b: number): boolean =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const table: string[] = [];
  let next = 0;
  for (let b = 0; b < 256; b += 1) {
    table.push(String.fromCharCode(printable(b) ? b : 256 + next++));
  }
  return table;
})();

const utf8 = new TextEncoder();

/** Maps text to the byte-level alphabet that vocab entries and merges are written in. */
export function toByteLevel(text: string): string {
  let out = '';
  for (const byte of utf8.encode(text)) out += BYTE_TO_CHAR[byte];
  return out;
}

/**
 * Builds a deterministic byte-level BPE `tokenizer.json`. Ids: 0–255 are the bytes in byte
 * order, then each new merged symbol in merge rank order, then the special tokens.
 */
export function buildByteLevelBpeTokenizerJson(
  options: ByteLevelBpeOptions,
): ByteLevelBpeTokenizerJson {
  const vocab: Record<string, number> = {};
  let size = 0;
  for (const char of BYTE_TO_CHAR) vocab[char] = size++;

  const merges: [string, string][] = [];
  for (const [left, right] of options.merges ?? []) {
    if (!Object.hasOwn(vocab, left) || !Object.hasOwn(vocab, right)) {
      throw new Error(
        `merge ["${left}", "${right}"] uses a symbol that no earlier merge produced; ` +
          'merges must be in the byte-level alphabet (see toByteLevel) and in rank order',
      );
    }
    // Two merges may build the same symbol ("a"+"bc", "ab"+"c"); it gets one id, as in HF.
    const merged = left + right;
    if (!Object.hasOwn(vocab, merged)) vocab[merged] = size++;
    merges.push([left, right]);
  }

  const seen = new Set<string>();
  const added_tokens = options.specialTokens.map((content): HfAddedToken => {
    if (content.length === 0) throw new Error('a special token must not be empty');
    if (seen.has(content)) throw new Error(`special token "${content}" is listed twice`);
    seen.add(content);
    return {
      id: size++,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    };
  });

  const byteLevel = (addPrefixSpace: boolean): ByteLevelComponent => ({
    type: 'ByteLevel',
    add_prefix_space: addPrefixSpace,
    trim_offsets: true,
    use_regex: true,
  });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens,
    normalizer: null,
    // No prefix space: it would change the text and break the encode→decode identity.
    pre_tokenizer: byteLevel(false),
    post_processor: byteLevel(false),
    decoder: byteLevel(false),
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

/**
 * Learns up to `maxMerges` byte-level BPE merges from a corpus, the classic way: repeatedly join
 * the most frequent adjacent pair inside GPT-2 pre-tokenized words. Ties go to the pair that
 * sorts first, so the result depends only on the corpus. Pairs seen once are never merged.
 */
export function learnByteLevelBpeMerges(corpus: readonly string[], maxMerges: number): BpeMerge[] {
  const wordCounts = new Map<string, number>();
  for (const document of corpus) {
    for (const piece of document.match(GPT2_SPLIT_PATTERN) ?? []) {
      const word = toByteLevel(piece);
      wordCounts.set(word, (wordCounts.get(word) ?? 0) + 1);
    }
  }
  const words = [...wordCounts].map(([word, count]) => ({ symbols: Array.from(word), count }));

  const merges: BpeMerge[] = [];
  while (merges.length < maxMerges) {
    const pairCounts = new Map<string, number>();
    for (const { symbols, count } of words) {
      for (let i = 0; i + 1 < symbols.length; i += 1) {
        // U+0020 never occurs in the byte-level alphabet, so it separates the pair safely.
        const key = `${symbols[i]} ${symbols[i + 1]}`;
        pairCounts.set(key, (pairCounts.get(key) ?? 0) + count);
      }
    }
    let best: string | null = null;
    let bestCount = 1;
    for (const [key, count] of pairCounts) {
      if (count > bestCount || (count === bestCount && best !== null && key < best)) {
        best = key;
        bestCount = count;
      }
    }
    if (best === null) break;
    const [left, right] = best.split(' ') as [string, string];
    merges.push([left, right]);
    for (const word of words) word.symbols = applyMerge(word.symbols, left, right);
  }
  return merges;
}

function applyMerge(symbols: string[], left: string, right: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < symbols.length; i += 1) {
    if (i + 1 < symbols.length && symbols[i] === left && symbols[i + 1] === right) {
      out.push(left + right);
      i += 1;
    } else {
      out.push(symbols[i]);
    }
  }
  return out;
}

export interface TokenizerConfigOptions {
  bosToken?: string;
  eosToken?: string;
  padToken?: string;
  unkToken?: string;
  /** Jinja chat template; omit it to make consumers fall back to the plain template. */
  chatTemplate?: string;
  /** Whether plain-text and prompt/completion examples start with the BOS token. */
  addBosToken?: boolean;
  modelMaxLength?: number;
}

/** A `tokenizer_config.json` with the fields lorafleet and `transformers` read. */
export function buildTokenizerConfig(options: TokenizerConfigOptions): Record<string, unknown> {
  const config: Record<string, unknown> = {
    add_bos_token: options.addBosToken ?? false,
    add_eos_token: false,
    bos_token: options.bosToken ?? null,
    eos_token: options.eosToken ?? null,
    pad_token: options.padToken ?? null,
    unk_token: options.unkToken ?? null,
    // transformers' old default (true) rewrites " ." as "."; decoding must be exact.
    clean_up_tokenization_spaces: false,
    model_max_length: options.modelMaxLength ?? 1024,
    tokenizer_class: 'PreTrainedTokenizerFast',
  };
  if (options.chatTemplate !== undefined) config.chat_template = options.chatTemplate;
  return config;
}

/**
 * Writes `tokenizer.json` (and `tokenizer_config.json` when given) into `dir`, creating it.
 * Output is stable (fixed key order, 2-space indent, final newline) so committed fixtures diff.
 */
export async function writeTokenizerDir(
  dir: string,
  files: { tokenizerJson: object; tokenizerConfig?: object },
): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'tokenizer.json'), stableJson(files.tokenizerJson));
  if (files.tokenizerConfig !== undefined) {
    await writeFile(join(dir, 'tokenizer_config.json'), stableJson(files.tokenizerConfig));
  }
}

/** The exact bytes {@link writeTokenizerDir} writes for a JSON value. */
export function stableJson(value: object): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}
