import { renderChat, renderChatSegments } from './chat-template.renderer';
import type { TextTokenizer } from './text-tokenizer';
import type { TemplateMessage, TrainingExample } from './training-example.types';

/**
 * A tokenized example. `lossMask` is aligned with `inputIds` (same length, same positions):
 * `lossMask[t] === 1` means token `inputIds[t]` is a training target, i.e. the trainer scores
 * the logits at position `t - 1` against `inputIds[t]` with weight `lossMask[t]`. Shifting is the
 * trainer's job: targets = inputIds[1..], weights = lossMask[1..]. `lossMask[0]` is always 0,
 * since no position predicts the first token, so `sum(lossMask)` is the exact number of targets.
 */
export interface TokenizedExample {
  inputIds: number[];
  lossMask: number[];
  /** True when the example was longer than `maxSeqLength` and its tail was cut. */
  truncated: boolean;
}

export interface TokenizeExampleOptions {
  /** Longest sequence kept; longer examples lose their tail (right truncation). */
  maxSeqLength: number;
}

/**
 * The most characters one token is assumed to cover when an example is cut by characters
 * before tokenizing. Natural text averages about 4 characters a token in BPE vocabularies;
 * the longest tokens of common vocabularies (runs of spaces, dashes or `=`, long special
 * tokens) stay near or below 64, and what matters is the average over the kept tokens.
 */
export const MAX_CHARS_PER_TOKEN = 64;

/**
 * Characters of an example kept before tokenizing when at most `maxSeqLength` tokens are:
 * (maxSeqLength + 16) · {@link MAX_CHARS_PER_TOKEN}, e.g. 66,560 for 1024 tokens. Tokenizing
 * a 45 MB line to keep its first 1024 tokens took gigabytes; the cut makes the cost follow
 * `maxSeqLength` instead. The 16 spare tokens keep the cut away from the kept tokens, since a
 * cut can change how the last few tokens before it merge. Text that averages at most 64
 * characters a token keeps exactly the tokens it kept without the cut.
 */
export function maxExampleChars(maxSeqLength: number): number {
  return (maxSeqLength + 16) * MAX_CHARS_PER_TOKEN;
}

/** What {@link encodeExample} returns: the ids, the loss mask, and what a character cap cut. */
export interface EncodedExample {
  inputIds: number[];
  lossMask: number[];
  /** Characters were cut from the example's tail before tokenizing (`maxChars`). */
  charsCut: boolean;
  /** The cut dropped text (or the EOS) that would have been a target. */
  targetsCut: boolean;
}

export interface EncodeExampleOptions {
  /**
   * Characters of the example kept, counted over its parts in order (prompt then completion,
   * or the rendered chat); everything after is dropped before tokenizing, EOS included, as
   * right truncation drops a tail. Default: no cap.
   */
  maxChars?: number;
}

/**
 * Tokenizes one example for causal-LM training with a completion-only loss (DESIGN §1, §6):
 * - `text`: [BOS] text EOS; every text token and EOS is a target.
 * - `prompt_completion`: [BOS] prompt completion EOS; only completion and EOS are targets. The
 *   prompt and completion are encoded separately, exactly as a prompt is encoded at inference.
 * - `chat`: the chat template's rendering; targets are the spans of assistant messages with
 *   weight 1 (see `renderChatSegments`). BOS comes from the template, as in `transformers`.
 * BOS is added only when the tokenizer's `addBosToken` says so; EOS only when it has one.
 */
export function tokenizeExample(
  example: TrainingExample,
  tokenizer: TextTokenizer,
  options: TokenizeExampleOptions,
): TokenizedExample {
  const maxSeqLength = options.maxSeqLength;
  if (!Number.isInteger(maxSeqLength) || maxSeqLength < 1) {
    throw new RangeError(`maxSeqLength must be a positive integer, got ${maxSeqLength}`);
  }
  const { inputIds, lossMask, charsCut } = encodeExample(example, tokenizer, {
    maxChars: maxExampleChars(maxSeqLength),
  });
  if (inputIds.length <= maxSeqLength) return { inputIds, lossMask, truncated: charsCut };
  return {
    inputIds: inputIds.slice(0, maxSeqLength),
    lossMask: lossMask.slice(0, maxSeqLength),
    truncated: true,
  };
}

/**
 * Like {@link tokenizeExample} without token truncation: the example's ids and loss mask, of
 * its first `maxChars` characters when that option is set (the trainer always sets it, to
 * {@link maxExampleChars}).
 */
export function encodeExample(
  example: TrainingExample,
  tokenizer: TextTokenizer,
  options: EncodeExampleOptions = {},
): EncodedExample {
  const maxChars = options.maxChars ?? Infinity;
  const inputIds: number[] = [];
  const lossMask: number[] = [];
  let budget = maxChars;
  let charsCut = false;
  let targetsCut = false;
  const push = (ids: readonly number[], target: 0 | 1): void => {
    for (const id of ids) {
      inputIds.push(id);
      lossMask.push(target);
    }
  };
  /** Encodes `text` within what is left of the character budget; nothing after a cut. */
  const pushText = (text: string, target: 0 | 1): void => {
    if (charsCut) {
      if (target === 1 && text.length > 0) targetsCut = true;
      return;
    }
    let kept = text;
    if (text.length > budget) {
      kept = cutChars(text, budget);
      charsCut = true;
      if (target === 1) targetsCut = true;
    }
    budget -= kept.length;
    if (kept.length > 0) push(tokenizer.encode(kept), target);
  };
  const bos = bosIds(tokenizer);
  const eos = tokenizer.eosTokenId !== undefined ? [tokenizer.eosTokenId] : [];
  const pushEos = (): void => {
    // EOS ends the example: a cut example has no end, as with right truncation.
    if (!charsCut) push(eos, 1);
    else if (eos.length > 0) targetsCut = true;
  };

  switch (example.format) {
    case 'text':
      push(bos, 0);
      pushText(example.text, 1);
      pushEos();
      break;
    case 'prompt_completion':
      push(bos, 0);
      pushText(example.prompt, 0);
      pushText(example.completion, 1);
      pushEos();
      break;
    case 'chat': {
      // A message's characters past the budget lie past the cut wherever the template puts
      // them, so each content is capped before rendering: the template never copies a huge
      // message. Each segment is encoded on its own so a token never straddles a mask boundary.
      const messages = example.messages.map((m) =>
        m.content.length > maxChars ? { ...m, content: cutChars(m.content, maxChars) } : m,
      );
      for (const segment of renderChatSegments(messages, tokenizer)) {
        pushText(segment.text, segment.trainable ? 1 : 0);
      }
      if (messages.some((m, i) => m !== example.messages[i] && m.weight === 1)) targetsCut = true;
      if (messages.some((m, i) => m !== example.messages[i])) charsCut = true;
      break;
    }
    default:
      return assertNever(example);
  }
  if (lossMask.length > 0) lossMask[0] = 0;
  return { inputIds, lossMask, charsCut, targetsCut };
}

/** The first `count` UTF-16 units of `text`, never ending on half a surrogate pair. */
function cutChars(text: string, count: number): string {
  const end = Math.max(0, Math.floor(count));
  const last = text.charCodeAt(end - 1);
  return text.slice(0, last >= 0xd800 && last <= 0xdbff ? end - 1 : end);
}

/** [BOS] when the model's tokenizer adds it to plain text (`addBosToken`), else nothing. */
function bosIds(tokenizer: TextTokenizer): number[] {
  return tokenizer.addBosToken && tokenizer.bosTokenId !== undefined ? [tokenizer.bosTokenId] : [];
}

/**
 * The ids a model sees for chat `messages` at inference: the chat template's rendering with
 * the generation prompt (the header opening an assistant turn). BOS comes from the template,
 * as in `transformers`. Shared by sample generations and the serving API (issue 19), so a
 * served chat sees exactly the prompt training scored.
 */
export function encodeChatPrompt(
  messages: readonly TemplateMessage[],
  tokenizer: TextTokenizer,
): number[] {
  return tokenizer.encode(renderChat(messages, tokenizer, { addGenerationPrompt: true }));
}

/**
 * The ids a model sees for a plain-text prompt at inference: [BOS] prompt, encoded exactly as
 * a prompt/completion example's prompt is in training.
 */
export function encodeTextPrompt(prompt: string, tokenizer: TextTokenizer): number[] {
  return [...bosIds(tokenizer), ...tokenizer.encode(prompt)];
}

/** A prompt to generate from and the text the dataset expects back (for sample generations). */
export interface GenerationPrompt {
  promptIds: number[];
  reference: string;
}

/**
 * Builds the prompt a model sees at inference for a (validation) example, and the expected
 * answer: for chat, the messages before the last trained assistant message plus the generation
 * prompt; for prompt/completion, [BOS] prompt; for text, the first half of its tokens.
 */
export function buildGenerationPrompt(
  example: TrainingExample,
  tokenizer: TextTokenizer,
): GenerationPrompt {
  switch (example.format) {
    case 'chat': {
      let last = example.messages.length - 1;
      while (
        last >= 0 &&
        !(example.messages[last].role === 'assistant' && example.messages[last].weight === 1)
      ) {
        last -= 1;
      }
      return {
        promptIds: encodeChatPrompt(example.messages.slice(0, Math.max(last, 0)), tokenizer),
        reference: example.messages[last]?.content ?? '',
      };
    }
    case 'prompt_completion':
      return {
        promptIds: encodeTextPrompt(example.prompt, tokenizer),
        reference: example.completion,
      };
    case 'text': {
      const ids = tokenizer.encode(example.text);
      const half = Math.max(1, Math.floor(ids.length / 2));
      return {
        promptIds: [...bosIds(tokenizer), ...ids.slice(0, half)],
        reference: tokenizer.decode(ids.slice(half)),
      };
    }
    default:
      return assertNever(example);
  }
}

function assertNever(value: never): never {
  throw new Error(`unhandled training example: ${JSON.stringify(value)}`);
}
