/**
 * Text generation on a loaded model: KV-cached decoding (kv-cache.decoder.ts) with greedy,
 * temperature or top-p sampling, with or without an adapter. Choosing an adapter here never
 * touches the model (no `setActiveAdapter`, no merge), so several adapters can share one
 * loaded base and be switched per call (DESIGN §1: swapping an adapter must not reload the
 * base model).
 */
import type { TextTokenizer } from '@lorafleet/data';

import type { CausalLM } from '../models/causal-lm.model';
import { sequenceLimit } from '../models/model.config';
import { SeededRandom } from '../util/rng.util';
import { KvCacheDecoder } from './kv-cache.decoder';
import { sampleToken } from './sampling';

export interface GenerateOptions {
  /** Default 32. */
  maxNewTokens?: number;
  /** 0 (default) = greedy. */
  temperature?: number;
  /** Nucleus mass in (0, 1]. Default 1. */
  topP?: number;
  /** Seeds sampling. Default 0. */
  seed?: number;
  /** Generation stops after any of these (included in `tokenIds`). Default: the tokenizer's EOS. */
  stopTokenIds?: readonly number[];
  /**
   * Which adapter to apply: a name, `null` for the bare base model, or undefined for the
   * model's own state (its active adapter unless adapters are disabled).
   */
  adapter?: string | null;
}

export interface GenerationResult {
  /** Generated ids (the prompt excluded). */
  tokenIds: number[];
  finishReason: 'stop' | 'length';
  promptTokens: number;
  /** Seconds to the first generated token (prefill). */
  prefillSeconds: number;
  /** Seconds for the whole generation. */
  totalSeconds: number;
}

/** Resolves `options.adapter` against the model; rejects a choice its merged weights contradict. */
function resolveAdapter(model: CausalLM, requested: string | null | undefined): string | null {
  const current = model.mode === 'lora' && !model.adaptersDisabled ? model.activeAdapter : null;
  const adapter = requested === undefined ? current : requested;
  if (adapter !== null) model.loraConfig(adapter); // throws naming the known adapters
  const merged = model.adapterNames().filter((name) => model.isMerged(name) && name !== adapter);
  if (merged.length > 0) {
    throw new Error(
      `adapter(s) ${merged.join(', ')} are merged into the base weights; unmerge before generating with ` +
        (adapter === null ? 'the base model' : `adapter "${adapter}"`),
    );
  }
  return adapter;
}

/** Generates up to `maxNewTokens` ids after `promptIds`. */
export async function generateTokens(
  model: CausalLM,
  promptIds: readonly number[],
  options: GenerateOptions = {},
): Promise<GenerationResult> {
  const maxNewTokens = options.maxNewTokens ?? 32;
  if (!Number.isSafeInteger(maxNewTokens) || maxNewTokens < 0) {
    throw new RangeError(`maxNewTokens must be an integer >= 0 (got ${maxNewTokens})`);
  }
  if (promptIds.length === 0) throw new RangeError('the prompt must have at least one token');
  const vocab = model.config.vocabSize;
  for (const id of promptIds) {
    if (!Number.isInteger(id) || id < 0 || id >= vocab) {
      throw new RangeError(`prompt token id ${id} is outside the vocabulary (0..${vocab - 1})`);
    }
  }
  const limit = sequenceLimit(model.config);
  if (promptIds.length > limit) {
    throw new RangeError(`prompt has ${promptIds.length} tokens; the model allows ${limit}`);
  }
  const stop = new Set(options.stopTokenIds ?? []);
  const rng = new SeededRandom(options.seed ?? 0);
  const decoder = new KvCacheDecoder(model, resolveAdapter(model, options.adapter));
  const started = performance.now();
  let prefillSeconds = 0;
  const tokenIds: number[] = [];
  let finishReason: GenerationResult['finishReason'] = 'length';
  try {
    let next: readonly number[] = promptIds;
    while (tokenIds.length < maxNewTokens && decoder.length + next.length <= limit) {
      const logitsTensor = decoder.step(next); // [1, V]
      const logits = await logitsTensor.data();
      logitsTensor.dispose();
      if (tokenIds.length === 0) prefillSeconds = (performance.now() - started) / 1000;
      const token = sampleToken(logits, options, rng);
      tokenIds.push(token);
      if (stop.has(token)) {
        finishReason = 'stop';
        break;
      }
      next = [token];
    }
  } finally {
    decoder.dispose();
  }
  return {
    tokenIds,
    finishReason,
    promptTokens: promptIds.length,
    prefillSeconds,
    totalSeconds: (performance.now() - started) / 1000,
  };
}

export interface TextGenerationResult extends GenerationResult {
  /** Decoded completion, special tokens removed. */
  text: string;
}

/** Encodes `prompt` as written (BOS added when the tokenizer adds one), generates, decodes. */
export async function generateText(
  model: CausalLM,
  tokenizer: TextTokenizer,
  prompt: string | readonly number[],
  options: GenerateOptions = {},
): Promise<TextGenerationResult> {
  let promptIds =
    typeof prompt === 'string'
      ? [
          ...(tokenizer.addBosToken && tokenizer.bosTokenId !== undefined
            ? [tokenizer.bosTokenId]
            : []),
          ...tokenizer.encode(prompt),
        ]
      : prompt;
  // An empty prompt starts from BOS (or EOS, GPT-2's document separator), as HF does.
  const start = tokenizer.bosTokenId ?? tokenizer.eosTokenId;
  if (promptIds.length === 0 && start !== undefined) promptIds = [start];
  // EOS plus generation_config.json's end-of-turn ids (libs/data `stopTokenIds`).
  const stopTokenIds = options.stopTokenIds ?? tokenizer.stopTokenIds;
  const result = await generateTokens(model, promptIds, { ...options, stopTokenIds });
  return { ...result, text: tokenizer.decode(result.tokenIds, { skipSpecialTokens: true }) };
}
