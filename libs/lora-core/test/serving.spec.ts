/**
 * Serving (issue 19): heterogeneous batched decoding against each request decoded alone.
 *
 * The reference is independent of the batched path: each adapter is also imported into the
 * model itself and decoded by the single-sequence `KvCacheDecoder` (LoraLinear's own branch,
 * which generation.spec.ts checks against the full forward), while the batch reads the
 * registry's copies through `RowAdapterBatch`'s gather. Four adapters of different ranks,
 * scalings (one rsLoRA) and target modules (lm_head included) share a batch with a base row;
 * prompts have different lengths, and rows leave and join between steps.
 */
import { writeFile } from 'node:fs/promises';
import * as tf from '@tensorflow/tfjs';

import {
  AdapterRegistry,
  BatchedKvDecoder,
  KvCacheDecoder,
  addLoraAdapter,
  exportPeftAdapter,
  selectBackend,
  setActiveAdapter,
  type CausalLM,
  type LoraConfig,
  type RequestedBackend,
  type ServingAdapter,
} from '../src';
import { maxAbsDiff } from './fixture.helpers';
import { randomizeLoraB, tinyLlama } from './trainer.helpers';

const LOGIT_TOLERANCE = 1e-4;
const BASE_SHA = 'a'.repeat(64);

/** Worst logit differences, written to $SERVING_REPORT (a file path) when set. */
const figures: Record<string, number> = {};
afterAll(async () => {
  const target = process.env.SERVING_REPORT;
  if (target) await writeFile(target, `${JSON.stringify(figures, null, 2)}\n`);
});

const ADAPTERS: Record<string, Omit<LoraConfig, 'fanInFanOut'>> = {
  qv: { r: 4, alpha: 8, dropout: 0, targetModules: ['q_proj', 'v_proj'], useRslora: false },
  all: { r: 8, alpha: 16, dropout: 0, targetModules: 'all-linear', useRslora: false },
  head: {
    r: 2,
    alpha: 4,
    dropout: 0,
    targetModules: ['o_proj', 'down_proj', 'lm_head'],
    useRslora: true,
  },
  mlp: {
    r: 6,
    alpha: 3,
    dropout: 0,
    targetModules: ['k_proj', 'gate_proj', 'up_proj'],
    useRslora: false,
  },
};

/**
 * The tiny Llama (GQA 4:2, untied head) with the four adapters inside it (for the reference)
 * and registered from their PEFT bytes (for the batch).
 */
function servingFixture(): { model: CausalLM; registry: AdapterRegistry } {
  const model = tinyLlama(11);
  const registry = new AdapterRegistry(model, { maxBytes: 1 << 24, baseModelSha256: BASE_SHA });
  Object.entries(ADAPTERS).forEach(([name, cfg], i) => {
    addLoraAdapter(model, name, { ...cfg, fanInFanOut: false }, 100 + i);
    setActiveAdapter(model, name);
    randomizeLoraB(model, 200 + i, 0.2);
    const exported = exportPeftAdapter(model, name, 'tiny-llama');
    registry.register(name, {
      adapterConfig: exported.adapterConfig,
      safetensors: exported.adapterSafetensors,
      baseModelSha256: BASE_SHA,
    });
  });
  return { model, registry };
}

/** A request decoded alone by the single-sequence decoder: logits per step, greedy tokens. */
function decodeAlone(
  model: CausalLM,
  adapter: string | null,
  prompt: readonly number[],
  steps: number,
): { logits: Float32Array[]; tokens: number[] } {
  const decoder = new KvCacheDecoder(model, adapter);
  const logits: Float32Array[] = [];
  const tokens: number[] = [];
  let next = prompt;
  try {
    for (let s = 0; s < steps; s++) {
      const out = decoder.step(next); // [1, V]
      const row = out.dataSync() as Float32Array;
      out.dispose();
      logits.push(row);
      tokens.push(argmaxOf(row));
      next = [tokens[tokens.length - 1]];
    }
  } finally {
    decoder.dispose();
  }
  return { logits, tokens };
}

function argmaxOf(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

interface Request {
  id: string;
  adapter: string | null;
  prompt: number[];
  /** Batch step at which it joins. */
  joins: number;
  /** Decode steps it runs (prefill included). */
  steps: number;
}

const REQUESTS: Request[] = [
  { id: 'r-qv', adapter: 'qv', prompt: [5, 17, 42, 8, 99], joins: 0, steps: 7 },
  { id: 'r-all', adapter: 'all', prompt: [3, 250, 7], joins: 0, steps: 3 },
  { id: 'r-base', adapter: null, prompt: [61, 2, 2, 140, 9, 33, 12], joins: 0, steps: 7 },
  { id: 'r-head', adapter: 'head', prompt: [1], joins: 0, steps: 7 },
  { id: 'r-mlp', adapter: 'mlp', prompt: [200, 201, 202, 203], joins: 0, steps: 5 },
  // Joins after r-all has left: the batch is laid out again around the survivors' caches.
  { id: 'r-late', adapter: 'qv', prompt: [77, 78, 79, 80, 81, 82], joins: 3, steps: 4 },
  { id: 'r-late-base', adapter: null, prompt: [9, 10], joins: 4, steps: 3 },
];

describe.each(['cpu', 'wasm', 'wasm-blas'] as RequestedBackend[])(
  'heterogeneous batched decoding on %s',
  (backend) => {
    let model: CausalLM;
    let registry: AdapterRegistry;

    beforeAll(async () => {
      await selectBackend(backend);
      ({ model, registry } = servingFixture());
    });

    afterAll(() => {
      registry.dispose();
      model.dispose();
    });

    it('gives each row of a mixed batch (4 adapters + base, rows joining and leaving) its logits and greedy tokens alone', () => {
      // wasm-blas keeps the frozen weights in host memory: the shared product is hostMatMul.
      const onHost = model.linearLayers().filter((l) => l.hostWeight !== null).length;
      expect(onHost).toBe(backend === 'wasm-blas' ? model.linearLayers().length : 0);
      const alone = new Map(
        REQUESTS.map((r) => [r.id, decodeAlone(model, r.adapter, r.prompt, r.steps)]),
      );
      // Every adapter moves its row's logits, so dropping or mixing up a row's branch would show.
      for (const r of REQUESTS.filter((q) => q.adapter !== null)) {
        const base = decodeAlone(model, null, r.prompt, 1).logits[0];
        expect(maxAbsDiff(base, alone.get(r.id)!.logits[0])).toBeGreaterThan(0.05);
      }
      const tensorsBefore = tf.memory().numTensors;
      const decoder = new BatchedKvDecoder(model);
      const adapters = new Map<string, ServingAdapter | null>(
        REQUESTS.map((r) => [r.id, r.adapter === null ? null : registry.acquire(r.adapter)]),
      );
      const done = new Map<string, number>(); // steps taken
      const tokens = new Map<string, number[]>(REQUESTS.map((r) => [r.id, []]));
      let worst = 0;
      for (let step = 0; ; step++) {
        const active = REQUESTS.filter((r) => r.joins <= step && (done.get(r.id) ?? 0) < r.steps);
        if (active.length === 0) break;
        const rows = active.map((r) => ({
          id: r.id,
          tokens: done.has(r.id) ? [tokens.get(r.id)!.at(-1)!] : r.prompt,
          adapter: adapters.get(r.id)!,
        }));
        const logits = decoder.step(rows); // [rows, V]
        const data = logits.dataSync() as Float32Array;
        const vocab = logits.shape[1];
        logits.dispose();
        active.forEach((r, b) => {
          const taken = done.get(r.id) ?? 0;
          const row = data.subarray(b * vocab, (b + 1) * vocab);
          const diff = maxAbsDiff(row, alone.get(r.id)!.logits[taken]);
          worst = Math.max(worst, diff);
          expect(diff).toBeLessThanOrEqual(LOGIT_TOLERANCE);
          tokens.get(r.id)!.push(argmaxOf(row));
          done.set(r.id, taken + 1);
          if (taken + 1 === r.steps) decoder.release(r.id);
        });
      }
      figures[`${backend}: worst logit difference batched vs alone`] = worst;
      for (const r of REQUESTS) expect(tokens.get(r.id)).toEqual(alone.get(r.id)!.tokens);
      expect(decoder.sequenceIds).toEqual([]);
      decoder.dispose();
      for (const r of REQUESTS) if (r.adapter !== null) registry.release(r.adapter);
      expect(tf.memory().numTensors).toBe(tensorsBefore);
    });
  },
);
