import { renderChat, renderChatSegments } from './chat-template.renderer';
import type { TextTokenizer } from './text-tokenizer';
import type { TrainingExample } from './training-example.types';

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
  const { inputIds, lossMask } = encodeExample(example, tokenizer);
  if (inputIds.length <= maxSeqLength) return { inputIds, lossMask, truncated: false };
  return {
    inputIds: inputIds.slice(0, maxSeqLength),
    lossMask: lossMask.slice(0, maxSeqLength),
    truncated: true,
  };
}

/** Like {@link tokenizeExample} without truncation: the example's full ids and loss mask. */
export function encodeExample(
  example: TrainingExample,
  tokenizer: TextTokenizer,
): { inputIds: number[]; lossMask: number[] } {
  const inputIds: number[] = [];
  const lossMask: number[] = [];
  const push = (ids: readonly number[], target: 0 | 1): void => {
    for (const id of ids) {
      inputIds.push(id);
      lossMask.push(target);
    }
  };
  const bos =
    tokenizer.addBosToken && tokenizer.bosTokenId !== undefined ? [tokenizer.bosTokenId] : [];
  const eos = tokenizer.eosTokenId !== undefined ? [tokenizer.eosTokenId] : [];

  switch (example.format) {
    case 'text':
      push(bos, 0);
      push(tokenizer.encode(example.text), 1);
      push(eos, 1);
      break;
    case 'prompt_completion':
      push(bos, 0);
      push(tokenizer.encode(example.prompt), 0);
      push(tokenizer.encode(example.completion), 1);
      push(eos, 1);
      break;
    case 'chat':
      // Each segment is encoded on its own so a token never straddles a mask boundary.
      for (const segment of renderChatSegments(example.messages, tokenizer)) {
        push(tokenizer.encode(segment.text), segment.trainable ? 1 : 0);
      }
      break;
    default:
      return assertNever(example);
  }
  if (lossMask.length > 0) lossMask[0] = 0;
  return { inputIds, lossMask };
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
  const bos =
    tokenizer.addBosToken && tokenizer.bosTokenId !== undefined ? [tokenizer.bosTokenId] : [];
  switch (example.format) {
    case 'chat': {
      let last = example.messages.length - 1;
      while (
        last >= 0 &&
        !(example.messages[last].role === 'assistant' && example.messages[last].weight === 1)
      ) {
        last -= 1;
      }
      const context = example.messages.slice(0, Math.max(last, 0));
      const text = renderChat(context, tokenizer, { addGenerationPrompt: true });
      return {
        promptIds: tokenizer.encode(text),
        reference: example.messages[last]?.content ?? '',
      };
    }
    case 'prompt_completion':
      return {
        promptIds: [...bos, ...tokenizer.encode(example.prompt)],
        reference: example.completion,
      };
    case 'text': {
      const ids = tokenizer.encode(example.text);
      const half = Math.max(1, Math.floor(ids.length / 2));
      return {
        promptIds: [...bos, ...ids.slice(0, half)],
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
