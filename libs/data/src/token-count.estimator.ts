import type { TrainingExample } from './training-example.types';

/**
 * Rough token counts without a tokenizer, for the API (which never loads one) to size a file
 * quickly. About 4 UTF-8 bytes per token is OpenAI's rule of thumb for English BPE; real counts
 * come from `preflightSummary`.
 */
export function estimateTokenCount(text: string): number {
  return Math.ceil(Buffer.byteLength(text, 'utf8') / 4);
}

/** Per-message overhead of role markers and separators in typical chat templates. */
const CHAT_MESSAGE_OVERHEAD_TOKENS = 4;

/** {@link estimateTokenCount} for a whole example, special tokens and chat markup included. */
export function estimateExampleTokens(example: TrainingExample): number {
  switch (example.format) {
    case 'chat':
      return example.messages.reduce(
        (sum, message) => sum + estimateTokenCount(message.content) + CHAT_MESSAGE_OVERHEAD_TOKENS,
        2,
      );
    case 'prompt_completion':
      return estimateTokenCount(example.prompt) + estimateTokenCount(example.completion) + 2;
    case 'text':
      return estimateTokenCount(example.text) + 2;
    default:
      return assertNever(example);
  }
}

function assertNever(value: never): never {
  throw new Error(`unhandled training example: ${JSON.stringify(value)}`);
}
