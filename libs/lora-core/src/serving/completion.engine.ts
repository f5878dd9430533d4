/**
 * Continuous batching of completion requests over one loaded base (issue 19): requests for
 * any adapter of the base, or the base itself, are decoded together by `BatchedKvDecoder`,
 * each with its own sampling parameters, and join or leave between decode steps.
 *
 * Scheduling, one `step()` at a time:
 * 1. Waiting requests are admitted up to `maxBatchSize` running ones (first come, first
 *    served, none skipping the head of the queue) while the batch's key/value cache stays
 *    within `kvCacheBytes` (see `kvCacheBytesOf`), and prefilled together in a step of their
 *    own, so a long prompt never pads the running rows' one-token steps; each samples its
 *    first token. A request whose cache alone exceeds the budget is refused at `submit`
 *    (`KvCacheBudgetError`), so an empty batch always admits the head and nothing waits for ever.
 * 2. One decode step advances every running request by a token.
 * A request leaves the batch as soon as it finishes; its cache and adapter pin are released.
 *
 * Sampling is per request: its own `SeededRandom(seed)`, drawn once per sampled token as in
 * `generateTokens`, so a seeded request gives the same tokens whatever it is batched with
 * (its logits match its logits alone within float32 rounding; serving.spec.ts). This engine
 * knows nothing of queues or HTTP: a serving worker feeds it and streams `onDelta` out.
 */
import { randomInt } from 'node:crypto';

import type { TextTokenizer } from '@lorafleet/data';

import { sampleToken } from '../generation/sampling';
import type { CausalLM } from '../models/causal-lm.model';
import type { ModelConfig } from '../models/model.config';
import { SeededRandom } from '../util/rng.util';
import type { AdapterRegistry, ServingAdapter } from './adapter.registry';
import { BatchedKvDecoder, type DecodeRow } from './batched-kv.decoder';
import { StopSequenceMatcher } from './stop-sequence.matcher';

/** A request ended by `cancel` (its client went away). */
export class CompletionCancelledError extends Error {
  override readonly name = 'CompletionCancelledError';

  constructor(readonly requestId: string) {
    super(`completion request "${requestId}" was cancelled`);
  }
}

/**
 * A request whose key/value cache alone exceeds the engine's budget: it could never be
 * admitted. `maxTotalTokens` is the most prompt + completion tokens that fit.
 */
export class KvCacheBudgetError extends RangeError {
  override readonly name = 'KvCacheBudgetError';

  constructor(
    readonly requiredBytes: number,
    readonly budgetBytes: number,
    readonly promptTokens: number,
    readonly maxTotalTokens: number,
  ) {
    const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
    super(
      `the request needs ${mib(requiredBytes)} of key/value cache for its prompt and max_tokens; ` +
        `the serving budget is ${mib(budgetBytes)}, room for ${maxTotalTokens} tokens in all ` +
        (maxTotalTokens > promptTokens
          ? `(max_tokens at most ${maxTotalTokens - promptTokens} with this prompt)`
          : `(the prompt alone, ${promptTokens} tokens, does not fit)`),
    );
  }
}

/** Bytes of one float32 key or value element: the decoder's cache dtype. */
const KV_BYTES_PER_ELEMENT = 4;

/**
 * Key/value cache bytes one token takes in every layer: layers × 2 (K and V) × KV heads ×
 * head_dim × 4 bytes (float32). GPT-2 has as many KV heads as heads; the rotary families may
 * have fewer (GQA).
 */
export function kvCacheBytesPerToken(config: ModelConfig): number {
  const [kvHeads, headDim] =
    config.modelType === 'gpt2'
      ? [config.numHeads, config.hiddenSize / config.numHeads]
      : [config.numKeyValueHeads, config.headDim];
  return config.numLayers * 2 * kvHeads * headDim * KV_BYTES_PER_ELEMENT;
}

/**
 * The most key/value cache a batch of rows can hold: `BatchedKvDecoder` lays the cache out as
 * [rows, KV, width, D] per layer with every row padded to the longest, and a row's length
 * never exceeds its reservation (prompt + max_tokens, capped at the context), so the bound is
 * rows × the longest reservation × bytes per token. Counting each row's own length instead
 * would miss the padding.
 */
export function kvCacheBytesOf(reservedTokens: readonly number[], bytesPerToken: number): number {
  if (reservedTokens.length === 0) return 0;
  return reservedTokens.length * Math.max(...reservedTokens) * bytesPerToken;
}

/** OpenAI's cap on `stop` strings per request. */
export const MAX_STOP_SEQUENCES = 4;

export interface CompletionRequest {
  /** Unique among the engine's unfinished requests. */
  id: string;
  promptIds: readonly number[];
  /** The registry id of its adapter, or null for the base model. */
  adapterId: string | null;
  /** Most tokens to generate (OpenAI `max_tokens`); the context length may end it sooner. */
  maxTokens: number;
  /** 0 = greedy. Default 1, OpenAI's. */
  temperature?: number;
  /** Nucleus mass in (0, 1]. Default 1. */
  topP?: number;
  /**
   * Up to 4 strings; the completion ends before the first one to appear, which is not
   * returned (OpenAI's `stop`). Needs the engine's tokenizer.
   */
  stop?: readonly string[];
  /**
   * Token ids that end the completion: counted in usage, left out of the text. Default: the
   * tokenizer's `stopTokenIds` (EOS and end-of-turn ids), none without a tokenizer.
   */
  stopTokenIds?: readonly number[];
  /** Seeds sampling, per request. Default: a random seed. */
  seed?: number;
}

export type FinishReason = 'stop' | 'length';

export interface CompletionUsage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
}

/** One generated token, with the text it made final (for streaming). */
export interface CompletionDelta {
  requestId: string;
  tokenId: number;
  /** Newly final text; '' while text is held back (a possible stop string) or without a tokenizer. */
  text: string;
}

export interface CompletionResult {
  id: string;
  /** Every generated id, a final stop token included. */
  tokenIds: number[];
  /** The completion's text, stop sequences excluded; null without a tokenizer. */
  text: string | null;
  finishReason: FinishReason;
  usage: CompletionUsage;
}

export interface CompletionEngineOptions {
  /** Where `adapterId`s are found; requests naming an adapter need it. */
  registry?: AdapterRegistry;
  /** Needed for text, stop strings and the default stop tokens. */
  tokenizer?: TextTokenizer;
  /** Most requests decoded together. Default 16. */
  maxBatchSize?: number;
  /**
   * Most bytes of key/value cache the running batch may reserve (`kvCacheBytesOf`): a waiting
   * request joins only while the batch stays within it. Default: no limit. A decode step holds
   * the old and the new cache for a moment, so the peak is about twice this.
   */
  kvCacheBytes?: number;
}

interface RunningRequest {
  request: CompletionRequest;
  /** Prompt + max_tokens, capped at the context: the most cache positions it can hold. */
  reservedTokens: number;
  adapter: ServingAdapter | null;
  rng: SeededRandom;
  stopTokens: ReadonlySet<number>;
  matcher: StopSequenceMatcher;
  tokenIds: number[];
  text: string;
  onDelta?: (delta: CompletionDelta) => void;
  resolve: (result: CompletionResult) => void;
  reject: (error: unknown) => void;
}

export class CompletionEngine {
  private readonly decoder: BatchedKvDecoder;
  private readonly registry: AdapterRegistry | undefined;
  private readonly tokenizer: TextTokenizer | undefined;
  private readonly maxBatchSize: number;
  private readonly kvCacheBudget: number;
  private readonly kvBytesPerToken: number;
  private readonly waitingQueue: RunningRequest[] = [];
  private readonly runningRequests: RunningRequest[] = [];
  private stepping = false;

  constructor(
    private readonly model: CausalLM,
    options: CompletionEngineOptions = {},
  ) {
    this.decoder = new BatchedKvDecoder(model);
    this.registry = options.registry;
    this.tokenizer = options.tokenizer;
    this.maxBatchSize = options.maxBatchSize ?? 16;
    if (!Number.isSafeInteger(this.maxBatchSize) || this.maxBatchSize < 1) {
      throw new RangeError(`maxBatchSize must be an integer >= 1 (got ${this.maxBatchSize})`);
    }
    this.kvCacheBudget = options.kvCacheBytes ?? Infinity;
    if (!(this.kvCacheBudget > 0)) {
      throw new RangeError(`kvCacheBytes must be > 0 (got ${this.kvCacheBudget})`);
    }
    this.kvBytesPerToken = kvCacheBytesPerToken(model.config);
  }

  /** Requests admitted and not finished. */
  get running(): number {
    return this.runningRequests.length;
  }

  /** Requests waiting for a batch slot. */
  get waiting(): number {
    return this.waitingQueue.length;
  }

  /** Key/value cache bytes the running batch reserves (`kvCacheBytesOf`). */
  get kvCacheBytesReserved(): number {
    return kvCacheBytesOf(
      this.runningRequests.map((r) => r.reservedTokens),
      this.kvBytesPerToken,
    );
  }

  /**
   * Queues `request`; it joins the batch at a coming `step()`. Invalid parameters, an unknown
   * adapter or a duplicate id throw here; the promise settles when the request finishes.
   * Its adapter is pinned in the registry (never evicted) until then.
   */
  submit(
    request: CompletionRequest,
    onDelta?: (delta: CompletionDelta) => void,
  ): Promise<CompletionResult> {
    this.validate(request);
    const reservedTokens = this.reservedTokens(request);
    const required = kvCacheBytesOf([reservedTokens], this.kvBytesPerToken);
    if (required > this.kvCacheBudget) {
      throw new KvCacheBudgetError(
        required,
        this.kvCacheBudget,
        request.promptIds.length,
        Math.floor(this.kvCacheBudget / this.kvBytesPerToken),
      );
    }
    const adapter = request.adapterId === null ? null : this.acquire(request.adapterId);
    return new Promise<CompletionResult>((resolve, reject) => {
      this.waitingQueue.push({
        request,
        reservedTokens,
        adapter,
        rng: new SeededRandom(request.seed ?? randomInt(2 ** 31)),
        stopTokens: new Set(request.stopTokenIds ?? this.tokenizer?.stopTokenIds ?? []),
        matcher: new StopSequenceMatcher(request.stop ?? []),
        tokenIds: [],
        text: '',
        onDelta,
        resolve,
        reject,
      });
    });
  }

  /**
   * One scheduling round: admit and prefill waiting requests, then advance every running
   * request by one token. Returns whether requests remain. A failing decode step rejects
   * the requests it carried.
   */
  async step(): Promise<boolean> {
    // Rounds share the decoder's cache layout: they must not interleave.
    if (this.stepping) throw new Error('CompletionEngine.step() is already running');
    this.stepping = true;
    try {
      await this.round();
    } finally {
      this.stepping = false;
    }
    return this.runningRequests.length + this.waitingQueue.length > 0;
  }

  private async round(): Promise<void> {
    const admitted = this.admit();
    if (admitted.length > 0) {
      this.runningRequests.push(...admitted);
      await this.decodeStep(admitted, (r) => r.request.promptIds);
    }
    if (this.runningRequests.length > 0) {
      await this.decodeStep([...this.runningRequests], (r) => [r.tokenIds[r.tokenIds.length - 1]]);
    }
  }

  /**
   * Takes waiting requests, first come first served, while the batch has a slot and its
   * reserved cache stays within the budget. The head blocks those behind it (no skipping), so
   * a long request is not starved by short ones; submit refused any that never fits alone.
   */
  private admit(): RunningRequest[] {
    const admitted: RunningRequest[] = [];
    const reserved = this.runningRequests.map((r) => r.reservedTokens);
    while (this.waitingQueue.length > 0 && reserved.length < this.maxBatchSize) {
      const next = this.waitingQueue[0];
      const bytes = kvCacheBytesOf([...reserved, next.reservedTokens], this.kvBytesPerToken);
      if (bytes > this.kvCacheBudget) break;
      this.waitingQueue.shift();
      admitted.push(next);
      reserved.push(next.reservedTokens);
    }
    return admitted;
  }

  private reservedTokens(request: CompletionRequest): number {
    return Math.min(request.promptIds.length + request.maxTokens, this.decoder.maxLength);
  }

  /** Steps until every submitted request has finished. */
  async runUntilIdle(): Promise<void> {
    while (await this.step()) {
      // Each round already did its work.
    }
  }

  /**
   * Ends request `id` now, waiting or running (its client disconnected): its promise rejects
   * with `CompletionCancelledError`, its cache and adapter pin are freed. Safe between and
   * during steps. Returns whether the request was unfinished.
   */
  cancel(id: string): boolean {
    const r = [...this.waitingQueue, ...this.runningRequests].find((q) => q.request.id === id);
    if (!r) return false;
    this.fail(r, new CompletionCancelledError(id));
    return true;
  }

  /** Fails every unfinished request and frees the decoder. */
  dispose(): void {
    for (const r of [...this.waitingQueue, ...this.runningRequests]) {
      this.fail(r, new Error('the completion engine was disposed'));
    }
    this.decoder.dispose();
  }

  private async decodeStep(
    requests: RunningRequest[],
    tokens: (r: RunningRequest) => readonly number[],
  ): Promise<void> {
    const rows: DecodeRow[] = requests.map((r) => ({
      id: r.request.id,
      tokens: tokens(r),
      adapter: r.adapter,
    }));
    let logits: Float32Array;
    let vocab: number;
    try {
      const tensor = this.decoder.step(rows); // [rows, V]
      vocab = tensor.shape[1];
      logits = (await tensor.data()) as Float32Array;
      tensor.dispose();
    } catch (error) {
      for (const r of requests) this.fail(r, error);
      return;
    }
    requests.forEach((r, b) => {
      // Cancelled (or failed) while the step's logits were read: nothing more to do for it.
      if (!this.runningRequests.includes(r)) return;
      try {
        this.accept(r, logits.subarray(b * vocab, (b + 1) * vocab));
      } catch (error) {
        // A callback that throws ends its own request only.
        this.fail(r, error);
      }
    });
  }

  /** Samples `r`'s next token from its logits row and ends it when a stop condition holds. */
  private accept(r: RunningRequest, logits: Float32Array): void {
    const { request } = r;
    const sampling = { temperature: request.temperature ?? 1, topP: request.topP ?? 1 };
    const token = sampleToken(logits, sampling, r.rng);
    r.tokenIds.push(token);
    const stopToken = r.stopTokens.has(token);
    let finish: FinishReason | null = stopToken ? 'stop' : this.reachedLength(r) ? 'length' : null;
    let delta = '';
    if (this.tokenizer) {
      // A stop token ends the completion but is not part of its text.
      const textIds = stopToken ? r.tokenIds.slice(0, -1) : r.tokenIds;
      const full = this.tokenizer.decode(textIds, { skipSpecialTokens: true });
      const update = r.matcher.update(full);
      delta = update.delta;
      if (update.stopped) finish = 'stop';
      else if (finish !== null) delta += r.matcher.flush(full); // held-back text is final now
      r.text += delta;
    }
    r.onDelta?.({ requestId: request.id, tokenId: token, text: delta });
    if (finish !== null) this.complete(r, finish);
  }

  private reachedLength(r: RunningRequest): boolean {
    return (
      r.tokenIds.length >= r.request.maxTokens ||
      r.request.promptIds.length + r.tokenIds.length >= this.decoder.maxLength
    );
  }

  /** Takes `r` out of the engine, freeing its cache and its adapter pin. */
  private remove(r: RunningRequest): void {
    for (const queue of [this.runningRequests, this.waitingQueue]) {
      const index = queue.indexOf(r);
      if (index >= 0) queue.splice(index, 1);
    }
    this.decoder.release(r.request.id);
    if (r.adapter !== null) this.registry!.release(r.adapter.id);
  }

  private complete(r: RunningRequest, finishReason: FinishReason): void {
    this.remove(r);
    const promptTokens = r.request.promptIds.length;
    r.resolve({
      id: r.request.id,
      tokenIds: r.tokenIds,
      text: this.tokenizer ? r.text : null,
      finishReason,
      usage: {
        promptTokens,
        completionTokens: r.tokenIds.length,
        totalTokens: promptTokens + r.tokenIds.length,
      },
    });
  }

  private fail(r: RunningRequest, error: unknown): void {
    this.remove(r);
    r.reject(error);
  }

  private acquire(adapterId: string): ServingAdapter {
    if (!this.registry) {
      throw new RangeError(`request names adapter "${adapterId}" but the engine has no registry`);
    }
    return this.registry.acquire(adapterId);
  }

  private validate(request: CompletionRequest): void {
    const { id, promptIds, maxTokens, stop } = request;
    const known = [...this.waitingQueue, ...this.runningRequests].some((r) => r.request.id === id);
    if (known) throw new RangeError(`request id "${id}" is already in use`);
    if (promptIds.length === 0) throw new RangeError('the prompt must have at least one token');
    const vocab = this.model.config.vocabSize;
    for (const token of promptIds) {
      if (!Number.isInteger(token) || token < 0 || token >= vocab) {
        throw new RangeError(
          `prompt token id ${token} is outside the vocabulary (0..${vocab - 1})`,
        );
      }
    }
    const limit = this.decoder.maxLength;
    if (promptIds.length >= limit) {
      throw new RangeError(
        `the prompt has ${promptIds.length} tokens; the model's context is ${limit}, leaving no room to generate`,
      );
    }
    if (!Number.isSafeInteger(maxTokens) || maxTokens < 1) {
      throw new RangeError(`maxTokens must be an integer >= 1 (got ${maxTokens})`);
    }
    const temperature = request.temperature ?? 1;
    if (!(temperature >= 0) || !Number.isFinite(temperature)) {
      throw new RangeError(`temperature must be >= 0 (got ${temperature})`);
    }
    const topP = request.topP ?? 1;
    if (!(topP > 0 && topP <= 1)) throw new RangeError(`topP must be in (0, 1] (got ${topP})`);
    if (stop && stop.length > 0) {
      if (!this.tokenizer)
        throw new RangeError('stop sequences need the engine to have a tokenizer');
      if (stop.length > MAX_STOP_SEQUENCES) {
        throw new RangeError(`at most ${MAX_STOP_SEQUENCES} stop sequences (got ${stop.length})`);
      }
    }
  }
}
