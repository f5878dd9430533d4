/**
 * Generation: the KV-cache decoder against the full forward at every position (GPT-2 and
 * Llama fixtures from part 1, with adapters), greedy/temperature/top-p sampling, adapter
 * switching on one loaded base, merged adapters, and no tensor leaks.
 */
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';

import {
  KvCacheDecoder,
  SeededRandom,
  generateText,
  generateTokens,
  initBackend,
  loadCausalLM,
  loadPeftAdapter,
  sampleToken,
  samplingDistribution,
  type BackendName,
  type CausalLM,
} from '../src';
import { FIXTURES, maxAbsDiff, readInputs } from './fixture.helpers';
import { TINY_GPT2_DIR, randomizeLoraB, tinyGpt2, tinyTokenizer } from './trainer.helpers';

const CACHE_TOLERANCE = 1e-4;

/** Greedy decoding by re-running the full forward on the whole sequence each token. */
function naiveGreedy(model: CausalLM, prompt: number[], steps: number): number[] {
  const ids = [...prompt];
  const out: number[] = [];
  for (let i = 0; i < steps; i++) {
    const next = tf.tidy(() => {
      const logits = model.forward(tf.tensor2d([ids], undefined, 'int32')); // [1, T, V]
      return tf
        .argMax(tf.squeeze(tf.slice(logits, [0, ids.length - 1, 0], [1, 1, -1])), 0)
        .dataSync()[0];
    });
    ids.push(next);
    out.push(next);
  }
  return out;
}

describe.each(['cpu', 'wasm'] as BackendName[])('KV-cache decoding on %s', (backend) => {
  beforeAll(async () => {
    await initBackend(backend);
  });

  it.each(['gpt2-tiny', 'llama-tiny'])(
    '%s: cached logits equal the full forward at every position (with its adapter, and without)',
    async (name) => {
      const model = await loadCausalLM(join(FIXTURES, name));
      await loadPeftAdapter(model, 'ref', join(FIXTURES, `${name}-adapter`));
      try {
        const ids = readInputs(name).input_ids[0];
        for (const adapter of ['ref', null]) {
          if (adapter === null) model.disableAdapters();
          const full = tf.tidy(
            () => model.forward(tf.tensor2d([ids], undefined, 'int32')).arraySync()[0],
          ); // [T, V]
          if (adapter === null) model.enableAdapters();
          const decoder = new KvCacheDecoder(model, adapter);
          // Prefill 3 tokens, then one token per step.
          const first = decoder.step(ids.slice(0, 3));
          expect(maxAbsDiff(first.dataSync(), full[2])).toBeLessThanOrEqual(CACHE_TOLERANCE);
          first.dispose();
          for (let t = 3; t < ids.length; t++) {
            const logits = decoder.step([ids[t]]);
            expect(maxAbsDiff(logits.dataSync(), full[t])).toBeLessThanOrEqual(CACHE_TOLERANCE);
            logits.dispose();
          }
          decoder.dispose();
        }
      } finally {
        model.dispose();
      }
    },
  );
});

describe('generation on wasm', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  it('greedy decoding equals a naive full-recompute loop and leaks no tensors', async () => {
    const model = tinyGpt2(21);
    model.addAdapter(
      'x',
      { r: 4, alpha: 8, dropout: 0, targetModules: ['c_attn', 'c_fc'], useRslora: false },
      1,
    );
    randomizeLoraB(model, 3, 0.3);
    try {
      const before = tf.memory().numTensors;
      const result = await generateTokens(model, [10, 20, 30], { maxNewTokens: 12 });
      expect(tf.memory().numTensors).toBe(before);
      expect(result.tokenIds).toEqual(naiveGreedy(model, [10, 20, 30], 12));
      expect(result.finishReason).toBe('length');
      const stopped = await generateTokens(model, [10, 20, 30], {
        maxNewTokens: 12,
        stopTokenIds: [result.tokenIds[4]],
      });
      expect(stopped.finishReason).toBe('stop');
      expect(stopped.tokenIds.length).toBeLessThanOrEqual(5);
    } finally {
      model.dispose();
    }
  });

  it('switches adapters on one loaded base without touching its weights', async () => {
    const lora = { r: 4, alpha: 8, dropout: 0, targetModules: ['c_attn'], useRslora: false };
    const shared = tinyGpt2(5);
    shared.addAdapter('x', lora, 1);
    shared.addAdapter('y', lora, 2);
    shared.setActiveAdapter('x');
    randomizeLoraB(shared, 7, 0.5); // x only (the active one)
    shared.setActiveAdapter('y');
    randomizeLoraB(shared, 8, 0.5); // y only
    shared.setActiveAdapter('x');
    const baseTensors = shared.baseParameters().map((p) => p.tensor());
    const prompt = [3, 1, 4, 1, 5];
    try {
      const outputs: Record<string, number[]> = {};
      for (const adapter of ['x', 'y', null, 'x'] as const) {
        const key = String(adapter);
        const tokens = (await generateTokens(shared, prompt, { maxNewTokens: 8, adapter }))
          .tokenIds;
        if (key in outputs) expect(tokens).toEqual(outputs[key]);
        outputs[key] = tokens;
      }
      // References: the same weights, selected the ordinary way on the model.
      shared.setActiveAdapter('y');
      expect(outputs.y).toEqual(naiveGreedy(shared, prompt, 8));
      shared.setActiveAdapter('x');
      expect(outputs.x).toEqual(naiveGreedy(shared, prompt, 8));
      shared.disableAdapters();
      expect(outputs.null).toEqual(naiveGreedy(shared, prompt, 8));
      shared.enableAdapters();
      expect(new Set([outputs.x, outputs.y, outputs.null].map((o) => o.join())).size).toBe(3);
      // No reload, no merge: the very same base tensors, and the model's own selection kept.
      expect(shared.baseParameters().map((p) => p.tensor())).toEqual(baseTensors);
      expect(shared.activeAdapter).toBe('x');
      await expect(generateTokens(shared, prompt, { adapter: 'nope' })).rejects.toThrow(
        /no adapter named "nope"/,
      );
    } finally {
      shared.dispose();
    }
  });

  it('a merged adapter generates the same tokens; the base cannot be asked for while merged', async () => {
    const model = tinyGpt2(9);
    model.addAdapter(
      'x',
      { r: 4, alpha: 8, dropout: 0, targetModules: ['c_attn', 'c_proj'], useRslora: false },
      1,
    );
    randomizeLoraB(model, 4, 0.3);
    try {
      const unmerged = await generateTokens(model, [7, 8, 9], { maxNewTokens: 10 });
      model.mergeAdapter('x');
      const merged = await generateTokens(model, [7, 8, 9], { maxNewTokens: 10 });
      expect(merged.tokenIds).toEqual(unmerged.tokenIds);
      await expect(generateTokens(model, [7, 8, 9], { adapter: null })).rejects.toThrow(/merged/);
    } finally {
      model.dispose();
    }
  });

  it('generateText on the shipped tiny model decodes and stops at EOS', async () => {
    const model = await loadCausalLM(TINY_GPT2_DIR);
    const tokenizer = await tinyTokenizer();
    try {
      const result = await generateText(model, tokenizer, 'Say hi:', {
        maxNewTokens: 20,
        temperature: 0.8,
        topP: 0.9,
        seed: 3,
      });
      const again = await generateText(model, tokenizer, 'Say hi:', {
        maxNewTokens: 20,
        temperature: 0.8,
        topP: 0.9,
        seed: 3,
      });
      expect(again.tokenIds).toEqual(result.tokenIds);
      expect(result.text).toBe(tokenizer.decode(result.tokenIds, { skipSpecialTokens: true }));
      if (result.finishReason === 'stop')
        expect(result.tokenIds[result.tokenIds.length - 1]).toBe(tokenizer.eosTokenId);
      else expect(result.tokenIds).toHaveLength(20);
      expect(result.promptTokens).toBe(tokenizer.encode('Say hi:').length);
    } finally {
      model.dispose();
    }
  });
});

describe('sampling', () => {
  it('greedy picks the first maximum; temperature 0 is greedy', () => {
    const rng = new SeededRandom(1);
    expect(sampleToken([0.1, 2, 2, -1], {}, rng)).toBe(1);
    expect(sampleToken([0.1, 2, 3, -1], { temperature: 0, topP: 0.1 }, rng)).toBe(2);
  });

  it('top-p keeps the smallest most-likely set reaching p, renormalised', () => {
    const logits = [Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)];
    const keep = (p: number) => samplingDistribution(logits, 1, p);
    expect(keep(0.5).tokens).toEqual([0]);
    expect(keep(0.6).tokens).toEqual([0, 1]);
    expect(keep(0.9).tokens).toEqual([0, 1, 2]);
    expect(keep(1).tokens).toEqual([0, 1, 2, 3]);
    const d = keep(0.9);
    expect(d.probs.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
    expect(d.probs[0]).toBeCloseTo(0.5 / 0.95, 12);
    // Temperature sharpens (T < 1) or flattens (T > 1) the distribution.
    expect(samplingDistribution(logits, 0.5, 1).probs[0]).toBeGreaterThan(0.5);
    expect(samplingDistribution(logits, 2, 1).probs[0]).toBeLessThan(0.5);
  });

  it('sampled frequencies follow the distribution (seeded, so deterministic)', () => {
    const logits = [Math.log(0.6), Math.log(0.3), Math.log(0.1)];
    const rng = new SeededRandom(42);
    const counts = [0, 0, 0];
    for (let i = 0; i < 4000; i++) counts[sampleToken(logits, { temperature: 1 }, rng)] += 1;
    expect(counts.map((c) => c / 4000)).toEqual([
      expect.closeTo(0.6, 1),
      expect.closeTo(0.3, 1),
      expect.closeTo(0.1, 1),
    ]);
    expect(() => sampleToken(logits, { topP: 0 }, rng)).toThrow(RangeError);
  });
});
