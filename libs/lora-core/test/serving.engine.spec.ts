/**
 * The completion engine (issue 19): per-request sampling reproducible whatever the batch,
 * against the single-sequence `generateTokens`; finish reasons and usage; string stop
 * sequences on a real tokenizer (models/lorafleet-tiny-llama), streamed and whole.
 */
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { loadTokenizer, type TextTokenizer } from '@lorafleet/data';

import {
  BatchedKvDecoder,
  CompletionCancelledError,
  CompletionEngine,
  KvCacheBudgetError,
  StopSequenceMatcher,
  generateTokens,
  kvCacheBytesPerToken,
  loadCausalLM,
  selectBackend,
  type AdapterRegistry,
  type CausalLM,
  type CompletionRequest,
  type CompletionResult,
  type ExportedPeftAdapter,
} from '../src';
import { BASE_SHA, servingFixture } from './serving.helpers';

const TINY_LLAMA_DIR = join(__dirname, '../../../models/lorafleet-tiny-llama');

/** Sampled requests over four adapters and the base, each with its own seed and settings. */
const SAMPLED: CompletionRequest[] = [
  {
    id: 'x',
    promptIds: [5, 17, 42, 8],
    adapterId: 'all',
    maxTokens: 10,
    temperature: 0.9,
    topP: 0.95,
    seed: 42,
  },
  { id: 'm1', promptIds: [3, 250, 7], adapterId: 'qv', maxTokens: 6, temperature: 1.3, seed: 7 },
  { id: 'm2', promptIds: [61, 2, 2, 140, 9], adapterId: null, maxTokens: 9, topP: 0.5, seed: 8 },
  { id: 'm3', promptIds: [1], adapterId: 'head', maxTokens: 12, temperature: 0.7, seed: 9 },
  { id: 'm4', promptIds: [200, 201], adapterId: 'mlp', maxTokens: 4, temperature: 0, seed: 10 },
].map((r) => ({ ...r, stopTokenIds: [] }));

/** The single-sequence generator's tokens for `request`: the reference for the engine. */
async function generatedAlone(model: CausalLM, request: CompletionRequest): Promise<number[]> {
  const result = await generateTokens(model, request.promptIds, {
    adapter: request.adapterId,
    maxNewTokens: request.maxTokens,
    temperature: request.temperature ?? 1,
    topP: request.topP ?? 1,
    seed: request.seed,
    stopTokenIds: request.stopTokenIds,
  });
  return result.tokenIds;
}

describe('completion engine: sampling and finish reasons', () => {
  let model: CausalLM;
  let registry: AdapterRegistry;
  let exported: Map<string, ExportedPeftAdapter>;
  const reference = new Map<string, number[]>();

  beforeAll(async () => {
    await selectBackend('cpu');
    ({ model, registry, exported } = servingFixture());
    for (const r of SAMPLED) reference.set(r.id, await generatedAlone(model, r));
  });

  afterAll(() => {
    registry.dispose();
    model.dispose();
  });

  async function run(
    requests: CompletionRequest[],
    options: {
      maxBatchSize?: number;
      joinLate?: string;
      kvCacheBytes?: number;
      /** Called after each round with the engine's running count. */
      observe?: (running: number) => void;
    } = {},
  ): Promise<Map<string, CompletionResult>> {
    const engine = new CompletionEngine(model, {
      registry,
      maxBatchSize: options.maxBatchSize,
      kvCacheBytes: options.kvCacheBytes,
    });
    const results = new Map<string, CompletionResult>();
    const submit = (r: CompletionRequest) =>
      engine.submit(r).then((result) => results.set(r.id, result));
    const settled = requests.filter((r) => r.id !== options.joinLate).map(submit);
    // The late request joins after two rounds, next to requests already mid-generation.
    for (let round = 0; (await engine.step()) || settled.length < requests.length; round++) {
      expect(engine.running).toBeLessThanOrEqual(options.maxBatchSize ?? 16);
      expect(engine.kvCacheBytesReserved).toBeLessThanOrEqual(options.kvCacheBytes ?? Infinity);
      options.observe?.(engine.running);
      const late = requests.find((r) => r.id === options.joinLate);
      if (round === 1 && late) settled.push(submit(late));
    }
    await Promise.all(settled);
    engine.dispose();
    return results;
  }

  it('gives a seeded request the same tokens alone, in any batch, joining late, and as generateTokens', async () => {
    const x = SAMPLED[0];
    // The seed matters: another one samples other tokens.
    expect(await generatedAlone(model, { ...x, seed: 43 })).not.toEqual(reference.get('x'));
    const tensorsBefore = tf.memory().numTensors;
    const runs = [
      await run([x]),
      await run(SAMPLED),
      await run([...SAMPLED].reverse(), { joinLate: 'x' }),
      await run(SAMPLED, { maxBatchSize: 2 }),
    ];
    for (const results of runs) {
      for (const [id, result] of results) expect(result.tokenIds).toEqual(reference.get(id));
    }
    expect(runs[1].size).toBe(SAMPLED.length);
    expect(tf.memory().numTensors).toBe(tensorsBefore);
  });

  it('reports length, stop tokens, the context limit and usage', async () => {
    const greedy = { promptIds: [5, 17, 42, 8], adapterId: 'qv', temperature: 0 };
    const tokens = await generatedAlone(model, { ...greedy, id: 'g', maxTokens: 8 });
    const stopAt = tokens.indexOf(tokens[5]); // its first occurrence
    const results = await run([
      { ...greedy, id: 'length', maxTokens: 5 },
      { ...greedy, id: 'stop-token', maxTokens: 8, stopTokenIds: [tokens[5]] },
      // tinyLlama has 64 positions: 60 prompt tokens leave room for 4.
      {
        ...greedy,
        id: 'context',
        promptIds: Array.from({ length: 60 }, (_, i) => i),
        maxTokens: 50,
      },
    ]);
    expect(results.get('length')).toEqual({
      id: 'length',
      tokenIds: tokens.slice(0, 5),
      text: null,
      finishReason: 'length',
      usage: { promptTokens: 4, completionTokens: 5, totalTokens: 9 },
    });
    expect(results.get('stop-token')).toMatchObject({
      tokenIds: tokens.slice(0, stopAt + 1),
      finishReason: 'stop',
      usage: { promptTokens: 4, completionTokens: stopAt + 1, totalTokens: 5 + stopAt },
    });
    expect(results.get('context')).toMatchObject({
      finishReason: 'length',
      usage: { promptTokens: 60, completionTokens: 4, totalTokens: 64 },
    });
  });

  it('cancels a running request, freeing its pin, while its batch mates finish unchanged', async () => {
    const engine = new CompletionEngine(model, { registry });
    const [x, m1] = SAMPLED;
    const cancelled = engine.submit(x);
    const kept = engine.submit(m1);
    await engine.step();
    // Cancelled during the next step's logits read: the step must not touch it afterwards.
    const stepping = engine.step();
    await expect(engine.step()).rejects.toThrow(/already running/);
    expect(engine.cancel('x')).toBe(true);
    await stepping;
    await expect(cancelled).rejects.toThrow(new CompletionCancelledError('x'));
    expect(engine.cancel('x')).toBe(false);
    await engine.runUntilIdle();
    expect((await kept).tokenIds).toEqual(reference.get('m1'));
    // No pin is left on x's adapter: the registry may drop it.
    const peft = exported.get('all')!;
    registry.delete('all');
    registry.register('all', {
      adapterConfig: peft.adapterConfig,
      safetensors: peft.adapterSafetensors,
      baseModelSha256: BASE_SHA,
    });
    engine.dispose();
  });

  it('counts key/value cache bytes per token as the decoder allocates them', () => {
    // tinyLlama: 2 layers × (K, V) × 2 KV heads (GQA 4:2) × head_dim 8 × 4 bytes.
    const perToken = kvCacheBytesPerToken(model.config);
    expect(perToken).toBe(2 * 2 * 2 * 8 * 4);
    // The real cache grows by exactly that per token appended (after the first step, which
    // also builds the batch's row bookkeeping).
    const decoder = new BatchedKvDecoder(model);
    const row = (tokens: number[]) =>
      decoder.step([{ id: 'row', tokens, adapter: null }]).dispose();
    row([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    const before = tf.memory().numBytes;
    row([11]);
    expect(tf.memory().numBytes - before).toBe(perToken);
    row([12, 13, 14]);
    expect(tf.memory().numBytes - before).toBe(4 * perToken);
    decoder.dispose();
  });

  it('admits waiting requests only while the batch cache fits its byte budget, tokens unchanged', async () => {
    const perToken = kvCacheBytesPerToken(model.config);
    // Reservations (prompt + maxTokens): x 14, m1 9, m2 14, m3 13, m4 6. Rows are padded to
    // the longest, so room for 28 tokens admits x and m1 together (2 × 14) but not m2 too.
    const kvCacheBytes = 28 * perToken;
    const running: number[] = [];
    const results = await run(SAMPLED, { kvCacheBytes, observe: (n) => running.push(n) });
    expect(Math.max(...running)).toBe(2);
    expect(running.length).toBeGreaterThan(SAMPLED[0].maxTokens); // they took turns
    for (const r of SAMPLED) expect(results.get(r.id)?.tokenIds).toEqual(reference.get(r.id));
  });

  it('refuses a request whose cache alone exceeds the budget, naming the max_tokens that fit', async () => {
    const perToken = kvCacheBytesPerToken(model.config);
    const engine = new CompletionEngine(model, { registry, kvCacheBytes: 20 * perToken });
    const request: CompletionRequest = {
      id: 'big',
      promptIds: [5, 17, 42, 8],
      adapterId: 'qv',
      maxTokens: 17, // 21 tokens
      temperature: 0,
    };
    const refusal = (() => {
      try {
        void engine.submit(request);
      } catch (error) {
        return error;
      }
      return undefined;
    })();
    expect(refusal).toBeInstanceOf(KvCacheBudgetError);
    expect(refusal).toBeInstanceOf(RangeError);
    expect(refusal).toMatchObject({
      requiredBytes: 21 * perToken,
      budgetBytes: 20 * perToken,
      maxTotalTokens: 20,
      message: expect.stringMatching(/max_tokens at most 16 with this prompt/),
    });
    expect(() => engine.submit({ ...request, promptIds: new Array<number>(30).fill(1) })).toThrow(
      /the prompt alone, 30 tokens, does not fit/,
    );
    // Nothing was queued or pinned; one that fits runs.
    expect(engine.waiting).toBe(0);
    const fits = engine.submit({ ...request, maxTokens: 16 });
    await engine.runUntilIdle();
    expect((await fits).usage.totalTokens).toBeLessThanOrEqual(20);
    expect(() => new CompletionEngine(model, { kvCacheBytes: 0 })).toThrow(/kvCacheBytes/);
    engine.dispose();
  });

  it('refuses invalid requests when they are submitted', () => {
    const engine = new CompletionEngine(model, { registry });
    const base: CompletionRequest = { id: 'bad', promptIds: [1], adapterId: null, maxTokens: 4 };
    expect(() => engine.submit({ ...base, adapterId: 'missing' })).toThrow(/not loaded/);
    expect(() => engine.submit({ ...base, maxTokens: 0 })).toThrow(/maxTokens/);
    expect(() => engine.submit({ ...base, topP: 0 })).toThrow(/topP/);
    expect(() => engine.submit({ ...base, promptIds: [269] })).toThrow(/vocabulary/);
    expect(() => engine.submit({ ...base, stop: ['\n'] })).toThrow(/tokenizer/);
    expect(() => engine.submit({ ...base, promptIds: new Array<number>(64).fill(1) })).toThrow(
      /context is 64/,
    );
    engine.dispose();
  });
});

describe('completion engine: stop sequences on a real tokenizer', () => {
  let model: CausalLM;
  let tokenizer: TextTokenizer;
  let prompt: number[];
  /** Greedy completion of the prompt decoded alone, without any stop. */
  let tokens: number[];
  let text: string;

  beforeAll(async () => {
    await selectBackend('cpu');
    model = await loadCausalLM(TINY_LLAMA_DIR);
    tokenizer = await loadTokenizer(TINY_LLAMA_DIR);
    prompt = tokenizer.encode('The whale');
    tokens = await generatedAlone(model, {
      id: 'ref',
      promptIds: prompt,
      adapterId: null,
      maxTokens: 16,
      temperature: 0,
      stopTokenIds: [],
    });
    text = tokenizer.decode(tokens, { skipSpecialTokens: true });
  });

  afterAll(() => model.dispose());

  /** Runs `request` batched with a sampled base request, collecting the streamed text. */
  async function complete(
    request: Omit<CompletionRequest, 'id' | 'promptIds' | 'adapterId'>,
  ): Promise<{ result: CompletionResult; streamed: string[] }> {
    const engine = new CompletionEngine(model, { tokenizer });
    const streamed: string[] = [];
    const done = engine.submit(
      { ...request, id: 'stop', promptIds: prompt, adapterId: null, stopTokenIds: [] },
      (delta) => streamed.push(delta.text),
    );
    const mate = engine.submit({
      id: 'mate',
      promptIds: tokenizer.encode('Call me'),
      adapterId: null,
      maxTokens: 20,
      seed: 1,
    });
    await engine.runUntilIdle();
    await mate;
    engine.dispose();
    return { result: await done, streamed };
  }

  it('ends before the first stop string, counting the tokens generated', async () => {
    const middle = Math.floor(text.length / 2);
    const stop = text.slice(middle, middle + 4);
    const cut = text.indexOf(stop);
    expect(cut).toBeGreaterThan(0); // some text comes before it
    // The first prefix of the completion whose text contains the stop string.
    let needed = 1;
    while (!tokenizer.decode(tokens.slice(0, needed), { skipSpecialTokens: true }).includes(stop))
      needed++;
    const { result, streamed } = await complete({
      maxTokens: 16,
      temperature: 0,
      stop: ['never-generated-stop', stop],
    });
    expect(result).toEqual({
      id: 'stop',
      tokenIds: tokens.slice(0, needed),
      text: text.slice(0, cut),
      finishReason: 'stop',
      usage: {
        promptTokens: prompt.length,
        completionTokens: needed,
        totalTokens: prompt.length + needed,
      },
    });
    expect(streamed.join('')).toBe(result.text);
    expect(streamed.length).toBe(needed);
  });

  it('streams the whole text and finishes on length when no stop string appears', async () => {
    const { result, streamed } = await complete({
      maxTokens: 16,
      temperature: 0,
      stop: ['never-generated-stop'],
    });
    expect(result).toMatchObject({ tokenIds: tokens, text, finishReason: 'length' });
    expect(streamed.join('')).toBe(text);
  });
});

describe('stop sequence matcher', () => {
  it('holds back text that may become a stop string, and unfinished characters', () => {
    const matcher = new StopSequenceMatcher(['world!', '\n\n']);
    expect(matcher.update('Hello wo')).toEqual({ delta: 'Hello ', stopped: false });
    expect(matcher.update('Hello wor')).toEqual({ delta: '', stopped: false });
    expect(matcher.update('Hello work')).toEqual({ delta: 'work', stopped: false });
    expect(matcher.update('Hello work\n')).toEqual({ delta: '', stopped: false });
    expect(matcher.update('Hello work\n\uFFFD')).toEqual({ delta: '\n', stopped: false });
    expect(matcher.update('Hello work\nÉ world')).toEqual({ delta: 'É ', stopped: false });
    expect(matcher.update('Hello work\nÉ world!!')).toEqual({ delta: '', stopped: true });
  });

  it('flushes held-back text when the completion ends another way', () => {
    const matcher = new StopSequenceMatcher(['###']);
    expect(matcher.update('a ##')).toEqual({ delta: 'a ', stopped: false });
    expect(matcher.flush('a ##')).toBe('##');
    expect(() => new StopSequenceMatcher([''])).toThrow(/empty/);
  });
});
