/**
 * Preference pairs (DPO, Rafailov et al. 2023, https://arxiv.org/abs/2305.18290) as training
 * rows. Each pair becomes two chat examples, prompt + chosen and prompt + rejected, tokenized by
 * the SFT path (`tokenizeExample`), so the prompt is masked and each completion is scored
 * exactly as a trained assistant turn is in SFT: the same template spans, the same truncation.
 */
import { buildBatch, type BuildBatchOptions, type TrainingBatch } from './batch.builder';
import {
  tokenizeExample,
  type TokenizeExampleOptions,
  type TokenizedExample,
} from './example.tokenizer';
import type { TextTokenizer } from './text-tokenizer';
import type { ChatExample, PreferenceExample } from './training-example.types';

/** One pair's two token rows; each `lossMask` covers only its completion (and end of turn). */
export interface TokenizedPreferencePair {
  chosen: TokenizedExample;
  rejected: TokenizedExample;
}

/**
 * A DPO micro-batch: `2 · pairs` rows padded to one length, chosen completions in rows
 * `[0, pairs)` and rejected ones in rows `[pairs, 2 · pairs)`, pair i in rows i and pairs + i.
 * One forward pass then scores both sides (TRL's `concatenated_forward` layout).
 */
export interface PreferenceBatch extends TrainingBatch {
  pairs: number;
}

/** The pair's two chats: the prompt (weight 0) followed by each completion (weight 1). */
export function preferenceChats(example: PreferenceExample): {
  chosen: ChatExample;
  rejected: ChatExample;
} {
  return {
    chosen: { format: 'chat', messages: [...example.prompt, ...example.chosen] },
    rejected: { format: 'chat', messages: [...example.prompt, ...example.rejected] },
  };
}

/**
 * Tokenizes both sides of a pair with `tokenizeExample`. A side cut by `maxSeqLength` keeps its
 * head, as in SFT; one cut inside its prompt has no scored tokens left (its log-probability is
 * then 0 on both policies, so the pair adds nothing but noise) and its `truncated` says so.
 */
export function tokenizePreferencePair(
  example: PreferenceExample,
  tokenizer: TextTokenizer,
  options: TokenizeExampleOptions,
): TokenizedPreferencePair {
  const chats = preferenceChats(example);
  return {
    chosen: tokenizeExample(chats.chosen, tokenizer, options),
    rejected: tokenizeExample(chats.rejected, tokenizer, options),
  };
}

/** Pads pairs into one {@link PreferenceBatch} with `buildBatch` (right padding, pads masked). */
export function buildPreferenceBatch(
  pairs: readonly TokenizedPreferencePair[],
  options: BuildBatchOptions,
): PreferenceBatch {
  const rows = [...pairs.map((p) => p.chosen), ...pairs.map((p) => p.rejected)];
  return { ...buildBatch(rows, options), pairs: pairs.length };
}
