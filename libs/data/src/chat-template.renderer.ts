import { Template } from '@huggingface/jinja';
import type { TextTokenizer } from './text-tokenizer';
import type { ChatMessage, TemplateMessage } from './training-example.types';

/**
 * The template used when a model ships none (documented in docs/data.md). Each message is a
 * role marker line and its content; assistant turns end with EOS so the model learns to stop;
 * turns are separated by a newline that belongs to the next turn, so the trained span of an
 * assistant turn is exactly its content plus EOS:
 *
 * ```
 * <|system|>\nYou are terse.\n<|user|>\nHi\n<|assistant|>\nHello!<eos>
 * ```
 */
export const PLAIN_CHAT_TEMPLATE = [
  '{%- for message in messages %}',
  "{%- if not loop.first %}{{ '\\n' }}{% endif %}",
  "{{- '<|' + message.role + '|>\\n' + message.content }}",
  "{%- if message.role == 'assistant' %}{{ eos_token }}{% endif %}",
  '{%- endfor %}',
  '{%- if add_generation_prompt %}',
  "{%- if messages | length > 0 %}{{ '\\n' }}{% endif %}",
  "{{- '<|assistant|>\\n' }}",
  '{%- endif %}',
].join('\n');

/** A chat template failed to parse or render, or cannot be split into trained spans. */
export class ChatTemplateError extends Error {
  override readonly name = 'ChatTemplateError';
}

/** What rendering needs from a tokenizer; a full {@link TextTokenizer} satisfies it. */
export type ChatTemplateSource = Pick<TextTokenizer, 'chatTemplate' | 'specialTokensMap'>;

export interface RenderChatOptions {
  /** Append the header that opens an assistant turn, as for generation. Default false. */
  addGenerationPrompt?: boolean;
}

/**
 * Renders messages with the tokenizer's chat template, or {@link PLAIN_CHAT_TEMPLATE} when it has
 * none. Variables match `transformers`' `apply_chat_template`: `messages`,
 * `add_generation_prompt` and the special tokens (`bos_token`, `eos_token`, …; '' when absent).
 */
export function renderChat(
  messages: readonly TemplateMessage[],
  tokenizer: ChatTemplateSource,
  options: RenderChatOptions = {},
): string {
  const template = compileTemplate(tokenizer.chatTemplate ?? PLAIN_CHAT_TEMPLATE);
  try {
    return template.render({
      bos_token: '',
      eos_token: '',
      pad_token: '',
      unk_token: '',
      ...tokenizer.specialTokensMap,
      messages: messages.map(({ role, content }) => ({ role, content })),
      add_generation_prompt: options.addGenerationPrompt ?? false,
    });
  } catch (error) {
    throw new ChatTemplateError(`chat template failed to render: ${errorMessage(error)}`);
  }
}

/** A piece of rendered chat text and whether its tokens are training targets. */
export interface ChatSegment {
  text: string;
  trainable: boolean;
}

/**
 * Renders a chat and splits the text into spans, marking what each trained assistant message
 * contributes (its content and the template's end-of-turn text, e.g. EOS or `<|im_end|>`).
 * Concatenating the segments' text gives exactly `renderChat(messages)`.
 *
 * How (docs/data.md, "Chat loss spans"): for each trained assistant message i, render
 * messages[0..i) with the generation prompt (P) and messages[0..i] without (E). When P is a
 * prefix of E and E a prefix of the whole chat, the span [|P|, |E|) is what the model must
 * produce after the generation prompt, i.e. exactly what it generates at inference. Templates that
 * rewrite earlier turns (e.g. dropping reasoning) break the prefix property; then each message's
 * content is located in order in the full text and its span is the content plus a directly
 * following EOS.
 */
export function renderChatSegments(
  messages: readonly ChatMessage[],
  tokenizer: ChatTemplateSource,
): ChatSegment[] {
  const full = renderChat(messages, tokenizer);
  const spans =
    spansByPrefixes(messages, tokenizer, full) ?? spansBySearch(messages, tokenizer, full);
  const segments: ChatSegment[] = [];
  let cursor = 0;
  for (const [start, end] of spans) {
    if (start > cursor) segments.push({ text: full.slice(cursor, start), trainable: false });
    if (end > start) segments.push({ text: full.slice(start, end), trainable: true });
    cursor = end;
  }
  if (cursor < full.length) segments.push({ text: full.slice(cursor), trainable: false });
  return segments;
}

type Span = [start: number, end: number];

function spansByPrefixes(
  messages: readonly ChatMessage[],
  tokenizer: ChatTemplateSource,
  full: string,
): Span[] | null {
  const spans: Span[] = [];
  let cursor = 0;
  for (let i = 0; i < messages.length; i += 1) {
    if (messages[i].role !== 'assistant' || messages[i].weight === 0) continue;
    let prompt: string;
    let withTurn: string;
    try {
      prompt = renderChat(messages.slice(0, i), tokenizer, { addGenerationPrompt: true });
      withTurn = renderChat(messages.slice(0, i + 1), tokenizer);
    } catch {
      // Some templates reject partial chats (e.g. one that must end with a user turn).
      return null;
    }
    if (!full.startsWith(withTurn) || !withTurn.startsWith(prompt) || prompt.length < cursor) {
      return null;
    }
    spans.push([prompt.length, withTurn.length]);
    cursor = withTurn.length;
  }
  return spans;
}

function spansBySearch(
  messages: readonly ChatMessage[],
  tokenizer: ChatTemplateSource,
  full: string,
): Span[] {
  const eos = tokenizer.specialTokensMap.eos_token ?? '';
  const spans: Span[] = [];
  let cursor = 0;
  for (let i = 0; i < messages.length; i += 1) {
    const { role, content, weight } = messages[i];
    const start = full.indexOf(content, cursor);
    if (start === -1) {
      throw new ChatTemplateError(
        `cannot find which tokens belong to messages[${i}] (${role}): the chat template ` +
          'rewrites message content and does not render conversation prefixes consistently',
      );
    }
    let end = start + content.length;
    if (role === 'assistant' && weight === 1) {
      if (eos !== '' && full.startsWith(eos, end)) end += eos.length;
      spans.push([start, end]);
    }
    cursor = end;
  }
  return spans;
}

// Chat templates are long and parsing is the slow part; a trainer renders thousands of chats
// with the same one or two templates.
const compiled = new Map<string, Template>();
const MAX_COMPILED_TEMPLATES = 16;

function compileTemplate(source: string): Template {
  const cached = compiled.get(source);
  if (cached !== undefined) return cached;
  let template: Template;
  try {
    template = new Template(source);
  } catch (error) {
    throw new ChatTemplateError(`chat template does not parse: ${errorMessage(error)}`);
  }
  if (compiled.size >= MAX_COMPILED_TEMPLATES) {
    const oldest = compiled.keys().next();
    if (oldest.done !== true) compiled.delete(oldest.value);
  }
  compiled.set(source, template);
  return template;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
