/**
 * Continuous batching of completion requests over one loaded base (issue 19): requests for
 * any adapter of the base, or the base itself, are decoded together by `BatchedKvDecoder`,
 * each with its own sampling parameters, and join or leave between decode steps.
 *
 * Scheduling, one `step()` at a time:
 * 1. Waiting requests are admitted up to `maxBatchSize` running ones (first come, first
 *    served) and prefilled together in a step of their own, so a long prompt never pads the
 *    running rows' one-token steps; each samples its first token.
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
}

interface RunningRequest {
  request: CompletionRequest;
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
  }

  /** Requests admitted and not finished. */
  get running(): number {
    return this.runningRequests.length;
  }

  /** Requests waiting for a batch slot. */
  get waiting(): number {
    return this.waitingQueue.length;
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
    const adapter = request.adapterId === null ? null : this.acquire(request.adapterId);
    return new Promise<CompletionResult>((resolve, reject) => {
      this.waitingQueue.push({
        request,
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
    const admitted = this.waitingQueue.splice(
      0,
      Math.max(0, this.maxBatchSize - this.runningRequests.length),
    );
    if (admitted.length > 0) {
      this.runningRequests.push(...admitted);
      await this.decodeStep(admitted, (r) => r.request.promptIds);
    }
    if (this.runningRequests.length > 0) {
      await this.decodeStep([...this.runningRequests], (r) => [r.tokenIds[r.tokenIds.length - 1]]);
    }
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
