import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';

/**
 * A model's tokenizer as training and generation need it: plain ids in and out, the special
 * tokens resolved to ids, and the chat template when the model has one.
 */
export interface TextTokenizer {
  /**
   * Encodes text exactly as written: no BOS/EOS is added (callers decide, see
   * `tokenizeExample`), but special-token strings inside the text become their ids.
   */
  encode(text: string): number[];
  /** Decodes ids; an empty list gives ''. Ids outside the vocabulary throw a RangeError. */
  decode(ids: readonly number[], options?: { skipSpecialTokens?: boolean }): string;
  /** One past the largest id, added tokens included: the embedding table's row count. */
  readonly vocabSize: number;
  readonly bosTokenId?: number;
  readonly eosTokenId?: number;
  /**
   * Every id that ends a generation: the EOS id plus `generation_config.json`'s
   * `eos_token_id` (an id or a list: Llama 3 and Qwen2.5 instruct stop on end-of-turn
   * tokens too, e.g. `<|eot_id|>`, `<|im_end|>`), in that order, without repeats.
   */
  readonly stopTokenIds: readonly number[];
  /** The pad id: `pad_token`, else the EOS id, else 0. Pads are always masked out. */
  readonly padTokenId: number;
  readonly bosToken?: string;
  readonly eosToken?: string;
  /** Whether plain-text and prompt/completion examples start with BOS (the model's own habit). */
  readonly addBosToken: boolean;
  /** The model's Jinja chat template, when it ships one. */
  readonly chatTemplate?: string;
  /**
   * Special-token strings by their `tokenizer_config.json` key (`bos_token`, `eos_token`, …),
   * passed to chat templates as `transformers` does.
   */
  readonly specialTokensMap: Readonly<Record<string, string>>;
  /** The id of a token string, if it is in the vocabulary. */
  tokenToId(token: string): number | undefined;
}

/** Reading or interpreting a model's tokenizer files failed; `file` names the culprit. */
export class TokenizerLoadError extends Error {
  override readonly name = 'TokenizerLoadError';
  constructor(
    message: string,
    readonly file?: string,
  ) {
    super(message);
  }
}

const SPECIAL_TOKEN_KEYS = ['bos_token', 'eos_token', 'pad_token', 'unk_token'] as const;

/**
 * Used only when no `tokenizer_config.json` names a special token: the spellings of common
 * model families, tried in order among the tokenizer's special added tokens.
 */
const CONVENTIONAL_SPECIAL_TOKENS: Record<(typeof SPECIAL_TOKEN_KEYS)[number], string[]> = {
  bos_token: ['<s>', '<|begin_of_text|>', '<bos>', '<|startoftext|>'],
  eos_token: ['</s>', '<|endoftext|>', '<|end_of_text|>', '<eos>'],
  pad_token: ['<pad>', '<|pad|>', '[PAD]'],
  unk_token: ['<unk>', '[UNK]'],
};

/**
 * Loads `<modelDir>/tokenizer.json` with `@huggingface/tokenizers`, plus `tokenizer_config.json`
 * when present (special tokens, `add_bos_token`, `chat_template`) and `generation_config.json`
 * (its `eos_token_id` list). A `chat_template.jinja` file, which newer `transformers`
 * versions write instead, takes precedence over the config's template.
 */
export async function loadTokenizer(modelDir: string): Promise<TextTokenizer> {
  const tokenizerPath = join(modelDir, 'tokenizer.json');
  const configPath = join(modelDir, 'tokenizer_config.json');
  const templatePath = join(modelDir, 'chat_template.jinja');
  const tokenizerJson = await readJsonFile(tokenizerPath, true);
  const tokenizerConfig = await readJsonFile(configPath, false);
  const chatTemplate = await readOptionalText(templatePath);
  const generationConfig = await readJsonFile(join(modelDir, 'generation_config.json'), false);
  return createTextTokenizer(tokenizerJson, tokenizerConfig, {
    chatTemplate,
    generationConfig,
    source: modelDir,
  });
}

/**
 * Builds a {@link TextTokenizer} from already-parsed files (e.g. fetched from a database rather
 * than a directory). `chatTemplate` overrides the config's template.
 */
export function createTextTokenizer(
  tokenizerJson: unknown,
  tokenizerConfig?: unknown,
  options: { chatTemplate?: string; generationConfig?: unknown; source?: string } = {},
): TextTokenizer {
  const source = options.source ?? 'tokenizer';
  if (!isRecord(tokenizerJson)) {
    throw new TokenizerLoadError(`${source}: tokenizer.json must hold a JSON object`);
  }
  if (tokenizerConfig !== undefined && !isRecord(tokenizerConfig)) {
    throw new TokenizerLoadError(`${source}: tokenizer_config.json must hold a JSON object`);
  }
  const config = tokenizerConfig ?? {};
  const specialTokensMap = resolveSpecialTokens(tokenizerJson, tokenizerConfig, source);

  let hf: Tokenizer;
  try {
    // The library reads special tokens as plain strings, and its decode defaults to
    // clean_up_tokenization_spaces=true, which breaks decode(encode(x)) === x.
    hf = new Tokenizer(tokenizerJson, {
      ...config,
      ...specialTokensMap,
      clean_up_tokenization_spaces: config.clean_up_tokenization_spaces === true,
    });
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    throw new TokenizerLoadError(`${source}: cannot build the tokenizer: ${detail}`);
  }

  const chatTemplate = options.chatTemplate ?? pickChatTemplate(config.chat_template, source);
  const extraStops = generationEosIds(options.generationConfig, source);
  return new HfTextTokenizer(hf, specialTokensMap, config, chatTemplate, source, extraStops);
}

/** `generation_config.json`'s `eos_token_id`: absent, an id, or a list of ids. */
function generationEosIds(generationConfig: unknown, source: string): number[] {
  if (generationConfig === undefined) return [];
  const value = isRecord(generationConfig) ? generationConfig.eos_token_id : undefined;
  if (value === undefined || value === null) return [];
  const ids = Array.isArray(value) ? (value as unknown[]) : [value];
  if (!ids.every((id) => typeof id === 'number' && Number.isSafeInteger(id) && id >= 0)) {
    throw new TokenizerLoadError(
      `${source}: generation_config.json eos_token_id must be a token id or a list of them`,
      'generation_config.json',
    );
  }
  return ids as number[];
}

class HfTextTokenizer implements TextTokenizer {
  readonly vocabSize: number;
  readonly bosTokenId?: number;
  readonly eosTokenId?: number;
  readonly stopTokenIds: readonly number[];
  readonly padTokenId: number;
  readonly bosToken?: string;
  readonly eosToken?: string;
  readonly addBosToken: boolean;

  constructor(
    private readonly hf: Tokenizer,
    readonly specialTokensMap: Readonly<Record<string, string>>,
    config: Record<string, unknown>,
    readonly chatTemplate: string | undefined,
    source: string,
    generationEos: readonly number[],
  ) {
    let maxId = -1;
    for (const id of hf.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;

    const idOf = (key: string): number | undefined => {
      const token = specialTokensMap[key];
      if (token === undefined) return undefined;
      const id = hf.token_to_id(token);
      if (id === undefined) {
        throw new TokenizerLoadError(
          `${source}: ${key} "${token}" is not in the tokenizer's vocabulary`,
        );
      }
      return id;
    };
    this.bosToken = specialTokensMap.bos_token;
    this.eosToken = specialTokensMap.eos_token;
    this.bosTokenId = idOf('bos_token');
    this.eosTokenId = idOf('eos_token');
    this.padTokenId = idOf('pad_token') ?? this.eosTokenId ?? 0;
    idOf('unk_token');
    for (const id of generationEos) {
      if (id >= this.vocabSize) {
        throw new TokenizerLoadError(
          `${source}: generation_config.json eos_token_id ${id} is outside the vocabulary`,
          'generation_config.json',
        );
      }
    }
    const eos = this.eosTokenId === undefined ? [] : [this.eosTokenId];
    this.stopTokenIds = [...new Set([...eos, ...generationEos])];

    // Llama-style tokenizers add BOS in their post-processor rather than saying so in the
    // config; ask the tokenizer itself so both spellings of the habit are honoured.
    const bosId = this.bosTokenId;
    const postProcessorAddsBos =
      bosId !== undefined &&
      hf.encode('a', { add_special_tokens: true }).ids[0] === bosId &&
      hf.encode('a', { add_special_tokens: false }).ids[0] !== bosId;
    this.addBosToken =
      bosId !== undefined && (config.add_bos_token === true || postProcessorAddsBos);
  }

  encode(text: string): number[] {
    if (text.length === 0) return [];
    return this.hf.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return '';
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new RangeError(`token id ${id} is outside the vocabulary [0, ${this.vocabSize})`);
      }
    }
    return this.hf.decode([...ids], { skip_special_tokens: options.skipSpecialTokens ?? false });
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }
}

function resolveSpecialTokens(
  tokenizerJson: Record<string, unknown>,
  config: Record<string, unknown> | undefined,
  source: string,
): Record<string, string> {
  const map: Record<string, string> = {};
  for (const [key, value] of Object.entries(config ?? {})) {
    if (!key.endsWith('_token') || key.startsWith('add_')) continue;
    const token = specialTokenContent(value);
    if (token !== undefined) {
      map[key] = token;
    } else if (value !== null && (SPECIAL_TOKEN_KEYS as readonly string[]).includes(key)) {
      throw new TokenizerLoadError(
        `${source}: tokenizer_config.json ${key} must be a string, {"content": string} or null`,
      );
    }
  }
  // A config that leaves a key out (rather than setting it to null) says nothing about it, so
  // fall back to conventional spellings among the tokenizer's special tokens.
  const specials = new Set(
    (Array.isArray(tokenizerJson.added_tokens) ? tokenizerJson.added_tokens : [])
      .filter((t): t is Record<string, unknown> => isRecord(t) && t.special === true)
      .map((t) => t.content)
      .filter((c): c is string => typeof c === 'string'),
  );
  for (const key of SPECIAL_TOKEN_KEYS) {
    if (config !== undefined && Object.hasOwn(config, key)) continue;
    const guess = CONVENTIONAL_SPECIAL_TOKENS[key].find((token) => specials.has(token));
    if (guess !== undefined) map[key] = guess;
  }
  return map;
}

/** `transformers` stores special tokens as strings or as serialized AddedToken objects. */
function specialTokenContent(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (isRecord(value) && typeof value.content === 'string') return value.content;
  return undefined;
}

function pickChatTemplate(value: unknown, source: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  // transformers also allows a list of named templates; "default" is the one chats use.
  if (Array.isArray(value)) {
    const named: unknown = (value as unknown[]).find(
      (entry) => isRecord(entry) && entry.name === 'default',
    );
    if (isRecord(named) && typeof named.template === 'string') return named.template;
    throw new TokenizerLoadError(
      `${source}: chat_template lists named templates but none is named "default"`,
    );
  }
  throw new TokenizerLoadError(`${source}: chat_template must be a string or a list of templates`);
}

async function readJsonFile(path: string, required: boolean): Promise<unknown> {
  const text = await readOptionalText(path);
  if (text === undefined) {
    if (required) throw new TokenizerLoadError(`${path} not found`, path);
    return undefined;
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    throw new TokenizerLoadError(`${path} is not valid JSON: ${detail}`, path);
  }
}

async function readOptionalText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if (isRecord(error) && error.code === 'ENOENT') return undefined;
    const detail = error instanceof Error ? error.message : String(error);
    throw new TokenizerLoadError(`cannot read ${path}: ${detail}`, path);
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
