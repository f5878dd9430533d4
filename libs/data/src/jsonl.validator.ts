import {
  CHAT_ROLES,
  type ChatMessage,
  type ChatRole,
  type DatasetFormat,
  type DatasetKind,
  type PreferenceExample,
  type TrainingExample,
} from './training-example.types';

/** Size limits applied while validating; each one, when exceeded, is reported as an error. */
export interface JsonlLimits {
  /** Largest accepted file, in UTF-8 bytes. Checked first; an oversized file is not parsed. */
  maxBytes?: number;
  /** Largest accepted number of non-blank lines. */
  maxRows?: number;
  /**
   * Largest accepted line, in UTF-8 bytes without its line ending. A longer line is an error
   * naming it and is not parsed: one huge example costs the trainer memory out of all
   * proportion to what it can train (it keeps max_seq_length tokens of it).
   */
  maxLineBytes?: number;
  /** Fewest valid examples a usable file must hold. Default 1: an empty file is an error. */
  minExamples?: number;
}

/**
 * One problem found in a file. `line` is 1-based and counts every line, blank ones included,
 * so it matches what an editor shows. Line 0 means the whole file (size, row count, too few
 * examples).
 */
export interface JsonlLineError {
  line: number;
  reason: string;
}

export interface JsonlValidationResult {
  /** True when the file has no errors at all and may be used for training. */
  ok: boolean;
  /**
   * The file's line shape (`preference` for DPO pairs); `mixed` when valid lines of more than
   * one shape occur; null if none.
   */
  format: DatasetFormat | 'preference' | 'mixed' | null;
  /**
   * What the file trains, set by its first valid line: `sft` (chat, prompt/completion or text
   * lines) or `preference` (DPO pairs); `mixed` when valid lines of both kinds occur; null if none.
   */
  kind: DatasetKind | 'mixed' | null;
  /** Number of valid example lines (lines in a format other than the file's are not counted). */
  examples: number;
  /** Number of non-blank lines. */
  rows: number;
  /** Whole-file errors first, then line errors in order, capped at {@link MAX_REPORTED_ERRORS}. */
  errors: JsonlLineError[];
  /** Total number of errors, including those left out of `errors`. */
  errorCount: number;
}

/** Keeps a validation answer small enough for a REST body even when every line is bad. */
export const MAX_REPORTED_ERRORS = 100;

/** Long reasons (JSON.parse echoes the input) would bloat the report; a prefix identifies it. */
const MAX_REASON_LENGTH = 200;

/** Thrown by {@link parseJsonlExamples}; carries the validator's structured answer. */
export class DatasetValidationError extends Error {
  override readonly name = 'DatasetValidationError';
  readonly errors: JsonlLineError[];
  readonly errorCount: number;

  constructor(readonly result: JsonlValidationResult) {
    super(summarizeValidationErrors(result));
    this.errors = result.errors;
    this.errorCount = result.errorCount;
  }
}

/**
 * A one-line human summary such as `3 errors; line 2: invalid JSON …; line 5: …`, suitable for
 * the OpenAI file object's `status_details`.
 */
export function summarizeValidationErrors(result: JsonlValidationResult, maxShown = 3): string {
  if (result.errorCount === 0) return 'no errors';
  const shown = result.errors
    .slice(0, maxShown)
    .map((e) => (e.line === 0 ? e.reason : `line ${e.line}: ${e.reason}`));
  const more =
    result.errorCount > shown.length ? `; … ${result.errorCount - shown.length} more` : '';
  const noun = result.errorCount === 1 ? 'error' : 'errors';
  return `invalid training file (${result.errorCount} ${noun}): ${shown.join('; ')}${more}`;
}

/**
 * Validates a JSONL training file (DESIGN §4 Files). Never throws on any content: every problem
 * becomes an error with a line number and a reason a user can act on.
 *
 * Accepted lines (one shape per file; unknown extra keys are ignored, as OpenAI files often
 * carry e.g. `tools`):
 * - `{"messages":[{"role":"system"|"user"|"assistant","content":string,"weight"?:0|1},…]}` with
 *   at least one assistant message that is trained (weight not 0) and has text;
 * - `{"prompt":string,"completion":string}` with a non-blank completion;
 * - `{"text":string}`, non-blank;
 * - preference data (OpenAI's DPO format): `{"input":{"messages":[…]},"preferred_output":[…],
 *   "non_preferred_output":[…]}`, each output a non-empty list of assistant messages with text.
 * The first three are SFT data; the result's `kind` says which kind the file holds.
 * Blank lines are skipped; `\r\n` endings and a leading byte-order mark are accepted.
 */
export function validateJsonl(
  content: string | Uint8Array,
  limits: JsonlLimits = {},
): JsonlValidationResult {
  return scanJsonl(content, limits, null, null);
}

/**
 * Parses an SFT training file into normalized examples, or throws
 * {@link DatasetValidationError} when the file has any error (the same errors
 * {@link validateJsonl} reports) or holds preference data.
 */
export function parseJsonlExamples(
  content: string | Uint8Array,
  limits: JsonlLimits = {},
): TrainingExample[] {
  return parseKind(content, limits, 'sft', (l): l is TrainingExample => l.format !== 'preference');
}

/**
 * Parses a preference (DPO) file into normalized pairs, or throws
 * {@link DatasetValidationError} when the file has any error or holds SFT data.
 */
export function parsePreferenceJsonl(
  content: string | Uint8Array,
  limits: JsonlLimits = {},
): PreferenceExample[] {
  return parseKind(
    content,
    limits,
    'preference',
    (l): l is PreferenceExample => l.format === 'preference',
  );
}

/** The file's lines of `kind`, or {@link DatasetValidationError} (a file of the other kind too). */
function parseKind<T extends DatasetLine>(
  content: string | Uint8Array,
  limits: JsonlLimits,
  kind: DatasetKind,
  isKind: (line: DatasetLine) => line is T,
): T[] {
  const examples: T[] = [];
  const result = scanJsonl(content, limits, kind, (line) => {
    if (isKind(line)) examples.push(line);
  });
  if (!result.ok) throw new DatasetValidationError(result);
  return examples;
}

type RawLine = { line: number; text: string } | { line: number; invalidUtf8: string };

/** A valid line of either kind. */
type DatasetLine = TrainingExample | PreferenceExample;

type LineVerdict = { ok: true; example: DatasetLine } | { ok: false; reason: string };

/** How errors name a kind of data. */
const KIND_NAMES: Record<DatasetKind, string> = {
  sft: 'SFT data',
  preference: 'preference (DPO) data',
};

function kindOf(format: DatasetLine['format']): DatasetKind {
  return format === 'preference' ? 'preference' : 'sft';
}

function scanJsonl(
  content: string | Uint8Array,
  limits: JsonlLimits,
  expectedKind: DatasetKind | null,
  sink: ((example: DatasetLine) => void) | null,
): JsonlValidationResult {
  const maxBytes = checkLimit('maxBytes', limits.maxBytes);
  const maxRows = checkLimit('maxRows', limits.maxRows);
  const maxLineBytes = checkLimit('maxLineBytes', limits.maxLineBytes);
  const minExamples = checkLimit('minExamples', limits.minExamples) ?? 1;

  const byteLength =
    typeof content === 'string' ? Buffer.byteLength(content, 'utf8') : content.byteLength;
  if (maxBytes !== undefined && byteLength > maxBytes) {
    // Parsing an oversized upload would spend the very resources the limit protects.
    const reason = `file is ${byteLength} bytes; the limit is ${maxBytes} bytes`;
    return {
      ok: false,
      format: null,
      kind: null,
      examples: 0,
      rows: 0,
      errors: [{ line: 0, reason }],
      errorCount: 1,
    };
  }

  const lineErrors: JsonlLineError[] = [];
  let lineErrorCount = 0;
  const addLineError = (line: number, reason: string): void => {
    lineErrorCount += 1;
    if (lineErrors.length < MAX_REPORTED_ERRORS) {
      lineErrors.push({ line, reason: clip(reason) });
    }
  };

  let rows = 0;
  let examples = 0;
  let fileFormat: { format: DatasetLine['format']; line: number } | null = null;
  let mixed = false;
  let mixedKinds = false;

  for (const raw of splitLines(content)) {
    if ('invalidUtf8' in raw) {
      rows += 1;
      addLineError(raw.line, raw.invalidUtf8);
      continue;
    }
    if (raw.text.trim() === '') continue;
    rows += 1;
    const lineBytes = maxLineBytes === undefined ? 0 : utf8LengthOver(raw.text, maxLineBytes);
    if (lineBytes > 0) {
      addLineError(
        raw.line,
        `line is ${lineBytes} bytes; the limit is ${maxLineBytes} bytes a line`,
      );
      continue;
    }
    const verdict = validateLine(raw.text);
    if (!verdict.ok) {
      addLineError(raw.line, verdict.reason);
      continue;
    }
    const format = verdict.example.format;
    if (fileFormat === null) {
      fileFormat = { format, line: raw.line };
    } else if (fileFormat.format !== format) {
      mixed = true;
      const fileKind = kindOf(fileFormat.format);
      if (kindOf(format) !== fileKind) {
        mixedKinds = true;
        addLineError(
          raw.line,
          `line is ${KIND_NAMES[kindOf(format)]} but the file holds ${KIND_NAMES[fileKind]} ` +
            `(set by line ${fileFormat.line}); a file holds one kind`,
        );
      } else {
        addLineError(
          raw.line,
          `line is in "${format}" format but the file's format is "${fileFormat.format}" ` +
            `(set by line ${fileFormat.line}); a file must use one format`,
        );
      }
      continue;
    }
    examples += 1;
    sink?.(verdict.example);
  }
  const kind = fileFormat === null ? null : kindOf(fileFormat.format);

  const fileErrors: JsonlLineError[] = [];
  if (expectedKind !== null && kind !== null && kind !== expectedKind && fileFormat !== null) {
    fileErrors.push({
      line: 0,
      reason:
        `file holds ${KIND_NAMES[kind]} (set by line ${fileFormat.line}), ` +
        `not ${KIND_NAMES[expectedKind]}`,
    });
  }
  if (maxRows !== undefined && rows > maxRows) {
    fileErrors.push({ line: 0, reason: `file has ${rows} rows; the limit is ${maxRows} rows` });
  }
  if (rows === 0) {
    fileErrors.push({ line: 0, reason: 'file is empty: it has no JSONL rows' });
  } else if (examples < minExamples) {
    fileErrors.push({
      line: 0,
      reason: `file has ${examples} valid example${examples === 1 ? '' : 's'}; at least ${minExamples} required`,
    });
  }

  const errorCount = fileErrors.length + lineErrorCount;
  const errors = [...fileErrors, ...lineErrors].slice(0, MAX_REPORTED_ERRORS);
  return {
    ok: errorCount === 0,
    format: mixed ? 'mixed' : (fileFormat?.format ?? null),
    kind: mixedKinds ? 'mixed' : kind,
    examples,
    rows,
    errors,
    errorCount,
  };
}

/**
 * The UTF-8 length of `text` when it exceeds `limit`, else 0. A UTF-16 unit takes one to three
 * UTF-8 bytes, so most lines are settled by their length alone without encoding them.
 */
function utf8LengthOver(text: string, limit: number): number {
  if (text.length * 3 <= limit) return 0;
  const bytes = Buffer.byteLength(text, 'utf8');
  return bytes > limit ? bytes : 0;
}

function checkLimit(name: string, value: number | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!Number.isInteger(value) || value < 0) {
    throw new RangeError(`${name} must be a non-negative integer, got ${value}`);
  }
  return value;
}

const UTF8_BOM = '\uFEFF';
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
// Unpaired UTF-16 surrogates cannot be encoded as UTF-8, so a string holding one did not come
// from a valid UTF-8 file.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function* splitLines(content: string | Uint8Array): Generator<RawLine> {
  if (typeof content === 'string') {
    yield* splitStringLines(content, true);
    return;
  }
  let whole: string | null = null;
  try {
    whole = strictUtf8.decode(content);
  } catch {
    whole = null;
  }
  if (whole !== null) {
    // Decoded text cannot hold lone surrogates, so the per-line check is skipped.
    yield* splitStringLines(whole, false);
    return;
  }
  // Slow path, only for broken files: decode line by line to name the bad lines.
  let start = 0;
  let line = 1;
  while (start <= content.length) {
    let end = content.indexOf(0x0a, start);
    if (end === -1) end = content.length;
    try {
      yield { line, text: stripLineEnd(strictUtf8.decode(content.subarray(start, end)), line) };
    } catch {
      yield { line, invalidUtf8: 'line is not valid UTF-8' };
    }
    start = end + 1;
    line += 1;
  }
}

function* splitStringLines(text: string, checkSurrogates: boolean): Generator<RawLine> {
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i += 1) {
    const line = i + 1;
    if (checkSurrogates && LONE_SURROGATE.test(lines[i])) {
      yield { line, invalidUtf8: 'line is not valid UTF-8 (it holds an unpaired surrogate)' };
    } else {
      yield { line, text: stripLineEnd(lines[i], line) };
    }
  }
}

function stripLineEnd(text: string, line: number): string {
  const withoutBom = line === 1 && text.startsWith(UTF8_BOM) ? text.slice(1) : text;
  return withoutBom.endsWith('\r') ? withoutBom.slice(0, -1) : withoutBom;
}

function validateLine(text: string): LineVerdict {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    return fail(`invalid JSON: ${detail}`);
  }
  if (!isPlainObject(value)) {
    return fail(`expected a JSON object, got ${describe(value)}`);
  }
  const isChat = Object.hasOwn(value, 'messages');
  const isPromptCompletion = Object.hasOwn(value, 'prompt') || Object.hasOwn(value, 'completion');
  const isText = Object.hasOwn(value, 'text');
  const isPreference = PREFERENCE_KEYS.some((key) => Object.hasOwn(value, key));
  const shapes = [
    isChat ? '"messages"' : null,
    isPromptCompletion ? '"prompt"/"completion"' : null,
    isText ? '"text"' : null,
    isPreference ? '"input"/"preferred_output"/"non_preferred_output"' : null,
  ].filter((s): s is string => s !== null);
  if (shapes.length === 0) {
    const keys = Object.keys(value);
    const found = keys.length === 0 ? 'it has none' : `found ${formatKeys(keys)}`;
    return fail(
      `no training fields: expected "messages", "prompt" and "completion", "text", or ` +
        `"input" with "preferred_output" and "non_preferred_output"; ${found}`,
    );
  }
  if (shapes.length > 1) {
    return fail(`ambiguous line: it has fields of more than one format (${shapes.join(', ')})`);
  }
  if (isChat) return validateChat(value.messages);
  if (isPromptCompletion) return validatePromptCompletion(value);
  if (isPreference) return validatePreference(value);
  return validateText(value.text);
}

/** The fields of OpenAI's preference (DPO) line, all required. */
const PREFERENCE_KEYS = ['input', 'preferred_output', 'non_preferred_output'] as const;

type MessageVerdict =
  | { ok: true; role: ChatRole; content: string; weight: 0 | 1 | undefined }
  | { ok: false; reason: string };

/** One chat message's shape: an object with a supported role, string content, weight 0 or 1. */
function checkMessage(message: unknown, at: string): MessageVerdict {
  if (!isPlainObject(message)) return fail(`${at} must be an object, got ${describe(message)}`);
  const { role, content, weight } = message;
  if (role === undefined) return fail(`${at}.role is missing`);
  if (typeof role !== 'string') return fail(`${at}.role must be a string, got ${describe(role)}`);
  if (!isChatRole(role)) {
    return fail(
      `${at}.role "${clip(role, 40)}" is not supported (expected ${CHAT_ROLES.join(', ')})`,
    );
  }
  if (content === undefined) return fail(`${at}.content is missing`);
  if (typeof content !== 'string') {
    return fail(`${at}.content must be a string, got ${describe(content)}`);
  }
  if (weight !== undefined && weight !== 0 && weight !== 1) {
    return fail(`${at}.weight must be 0 or 1, got ${describe(weight, true)}`);
  }
  return { ok: true, role, content, weight };
}

/**
 * OpenAI's DPO line: `input.messages` is the prompt (never scored); `preferred_output` and
 * `non_preferred_output` are the two completions, lists of assistant messages with text. A
 * `weight` has no meaning here (DPO scores each whole completion), so it is refused rather
 * than ignored.
 */
function validatePreference(value: Record<string, unknown>): LineVerdict {
  for (const key of PREFERENCE_KEYS) {
    if (value[key] === undefined) {
      return fail(
        `"${key}" is missing (a preference line needs ${PREFERENCE_KEYS.map((k) => `"${k}"`).join(', ')})`,
      );
    }
  }
  const { input } = value;
  if (!isPlainObject(input)) return fail(`"input" must be an object, got ${describe(input)}`);
  const { messages } = input;
  if (messages === undefined) return fail('"input.messages" is missing');
  if (!Array.isArray(messages)) {
    return fail(`"input.messages" must be an array, got ${describe(messages)}`);
  }
  if (messages.length === 0) return fail('"input.messages" is empty');
  const prompt: ChatMessage[] = [];
  for (let i = 0; i < messages.length; i += 1) {
    const at = `input.messages[${i}]`;
    const message = checkMessage(messages[i], at);
    if (!message.ok) return message;
    if (message.weight !== undefined) {
      return fail(`${at}.weight is not allowed in preference data: the prompt is never trained`);
    }
    prompt.push({ role: message.role, content: message.content, weight: 0 });
  }
  const chosen = validateOutput(value.preferred_output, 'preferred_output');
  if (!chosen.ok) return chosen;
  const rejected = validateOutput(value.non_preferred_output, 'non_preferred_output');
  if (!rejected.ok) return rejected;
  return {
    ok: true,
    example: { format: 'preference', prompt, chosen: chosen.messages, rejected: rejected.messages },
  };
}

function validateOutput(
  output: unknown,
  key: string,
): { ok: true; messages: ChatMessage[] } | { ok: false; reason: string } {
  if (!Array.isArray(output)) {
    return fail(`"${key}" must be an array of assistant messages, got ${describe(output)}`);
  }
  if (output.length === 0) return fail(`"${key}" is empty`);
  const messages: ChatMessage[] = [];
  for (let i = 0; i < output.length; i += 1) {
    const at = `${key}[${i}]`;
    const message = checkMessage(output[i], at);
    if (!message.ok) return message;
    if (message.role !== 'assistant') {
      return fail(`${at}.role must be "assistant", got "${message.role}"`);
    }
    if (message.weight !== undefined) {
      return fail(`${at}.weight is not allowed in preference data: every output is trained`);
    }
    if (message.content.trim() === '') return fail(`${at}.content is empty`);
    messages.push({ role: 'assistant', content: message.content, weight: 1 });
  }
  return { ok: true, messages };
}

function validateChat(messages: unknown): LineVerdict {
  if (!Array.isArray(messages)) {
    return fail(`"messages" must be an array, got ${describe(messages)}`);
  }
  if (messages.length === 0) return fail('"messages" is empty');
  const normalized: ChatMessage[] = [];
  let assistants = 0;
  let trained = 0;
  for (let i = 0; i < messages.length; i += 1) {
    const at = `messages[${i}]`;
    const message = checkMessage(messages[i], at);
    if (!message.ok) return message;
    const { role, content, weight } = message;
    let messageWeight: 0 | 1 = role === 'assistant' ? 1 : 0;
    if (weight !== undefined) {
      if (role !== 'assistant') {
        return fail(`${at}.weight is only allowed on assistant messages (role is "${role}")`);
      }
      messageWeight = weight;
    }
    if (role === 'assistant') {
      assistants += 1;
      if (messageWeight === 1) {
        if (content.trim() === '') {
          return fail(`${at}.content is empty; a trained assistant message needs text`);
        }
        trained += 1;
      }
    }
    normalized.push({ role, content, weight: messageWeight });
  }
  if (assistants === 0) return fail('no assistant message: there is nothing to train on');
  if (trained === 0) {
    return fail('every assistant message has "weight": 0: there is nothing to train on');
  }
  return { ok: true, example: { format: 'chat', messages: normalized } };
}

function validatePromptCompletion(value: Record<string, unknown>): LineVerdict {
  const { prompt, completion } = value;
  if (prompt === undefined) return fail('"prompt" is missing (a "completion" line needs one)');
  if (typeof prompt !== 'string') return fail(`"prompt" must be a string, got ${describe(prompt)}`);
  if (completion === undefined) {
    return fail('"completion" is missing (a "prompt" line needs one)');
  }
  if (typeof completion !== 'string') {
    return fail(`"completion" must be a string, got ${describe(completion)}`);
  }
  if (completion.trim() === '') return fail('"completion" is empty');
  return { ok: true, example: { format: 'prompt_completion', prompt, completion } };
}

function validateText(text: unknown): LineVerdict {
  if (typeof text !== 'string') return fail(`"text" must be a string, got ${describe(text)}`);
  if (text.trim() === '') return fail('"text" is empty');
  return { ok: true, example: { format: 'text', text } };
}

function fail(reason: string): { ok: false; reason: string } {
  return { ok: false, reason };
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isChatRole(role: string): role is ChatRole {
  return (CHAT_ROLES as readonly string[]).includes(role);
}

function describe(value: unknown, showValue = false): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (showValue && (typeof value === 'number' || typeof value === 'boolean')) {
    return `${typeof value} ${String(value)}`;
  }
  if (typeof value === 'string') return showValue ? `string "${clip(value, 40)}"` : 'a string';
  if (typeof value === 'object') return 'an object';
  // JSON.parse yields only the types above plus number and boolean.
  return `a ${typeof value}`;
}

function formatKeys(keys: string[]): string {
  const shown = keys.slice(0, 5).map((k) => `"${clip(k, 40)}"`);
  return keys.length > 5 ? `${shown.join(', ')} and ${keys.length - 5} more` : shown.join(', ');
}

function clip(text: string, max = MAX_REASON_LENGTH): string {
  if (text.length <= max) return text;
  let end = max - 1;
  // Never split a surrogate pair: half of one would make the reason itself invalid Unicode.
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end -= 1;
  return `${text.slice(0, end)}…`;
}
