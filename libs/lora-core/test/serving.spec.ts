/**
 * Serving (issue 19): heterogeneous batched decoding against each request decoded alone.
 *
 * The reference is independent of the batched path: each adapter is also imported into the
 * model itself and decoded by the single-sequence `KvCacheDecoder` (LoraLinear's own branch,
 * which generation.spec.ts checks against the full forward), while the batch reads the
 * registry's copies through `RowAdapterBatch`, in both of its layouts (rank-concatenated with
 * a per-row mask, and per-row stacks) and its own per-module choice. Four adapters of different ranks,
 * scalings (one rsLoRA) and target modules (Llama's lm_head included) share a batch with a
 * base row; prompts have different lengths, and rows leave and join between steps. Llama
 * (RoPE at per-row positions, GQA) and GPT-2 (learned positions), on cpu, wasm and wasm-blas
 * (frozen weights in host memory).
 */
import { writeFile } from 'node:fs/promises';
import * as tf from '@tensorflow/tfjs';

import {
  AdapterRegistry,
  AdapterRegistryError,
  BatchedKvDecoder,
  readSafetensors,
  selectBackend,
  type AdapterSource,
  type CausalLM,
  type ExportedPeftAdapter,
  type RequestedBackend,
  type RowAdapterLayout,
  type ServingAdapter,
} from '../src';
import { maxAbsDiff } from './fixture.helpers';
import {
  BASE_SHA,
  argmaxOf,
  decodeAlone,
  servingFixture,
  type ServingFamily,
} from './serving.helpers';

const LOGIT_TOLERANCE = 1e-4;

/** Worst logit differences, written to $SERVING_REPORT (a file path) when set. */
const figures: Record<string, number> = {};
afterAll(async () => {
  const target = process.env.SERVING_REPORT;
  if (target) await writeFile(target, `${JSON.stringify(figures, null, 2)}\n`);
});

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

const CASES = (['cpu', 'wasm', 'wasm-blas'] as RequestedBackend[]).flatMap((backend) =>
  (['llama', 'gpt2'] as ServingFamily[]).map((family): [RequestedBackend, ServingFamily] => [
    backend,
    family,
  ]),
);

describe.each(CASES)('heterogeneous batched decoding on %s: %s', (backend, family) => {
  let model: CausalLM;
  let registry: AdapterRegistry;

  beforeAll(async () => {
    await selectBackend(backend);
    ({ model, registry } = servingFixture(family));
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
    // Both of RowAdapterBatch's layouts, forced, and the per-module choice it makes itself.
    for (const layout of ['auto', 'rank-concat', 'row-stacked'] as RowAdapterLayout[]) {
      const tokens = decodeMixedBatch(layout, (r, step, row) => {
        const diff = maxAbsDiff(row, alone.get(r.id)!.logits[step]);
        const key = `${backend} / ${family} / ${layout}: worst logit difference batched vs alone`;
        figures[key] = Math.max(figures[key] ?? 0, diff);
        expect(diff).toBeLessThanOrEqual(LOGIT_TOLERANCE);
      });
      for (const r of REQUESTS) expect(tokens.get(r.id)).toEqual(alone.get(r.id)!.tokens);
    }
  });

  /**
   * Decodes REQUESTS in one batched decoder (rows joining and leaving), handing each row's
   * logits to `check`, and returns each request's greedy tokens. Leaves no tensor behind.
   */
  function decodeMixedBatch(
    layout: RowAdapterLayout,
    check: (r: Request, step: number, logits: Float32Array) => void,
  ): Map<string, number[]> {
    const tensorsBefore = tf.memory().numTensors;
    const decoder = new BatchedKvDecoder(model, { adapterLayout: layout });
    const adapters = new Map<string, ServingAdapter | null>(
      REQUESTS.map((r) => [r.id, r.adapter === null ? null : registry.acquire(r.adapter)]),
    );
    const done = new Map<string, number>(); // steps taken
    const tokens = new Map<string, number[]>(REQUESTS.map((r) => [r.id, []]));
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
        check(r, taken, row);
        tokens.get(r.id)!.push(argmaxOf(row));
        done.set(r.id, taken + 1);
        if (taken + 1 === r.steps) decoder.release(r.id);
      });
    }
    expect(decoder.sequenceIds).toEqual([]);
    decoder.dispose();
    for (const r of REQUESTS) if (r.adapter !== null) registry.release(r.adapter);
    expect(tf.memory().numTensors).toBe(tensorsBefore);
    return tokens;
  }
});

describe('adapter registry', () => {
  let model: CausalLM;
  let registry: AdapterRegistry;
  let exported: Map<string, ExportedPeftAdapter>;

  beforeAll(async () => {
    await selectBackend('cpu');
    ({ model, registry, exported } = servingFixture());
  });

  afterAll(() => {
    registry.dispose();
    model.dispose();
  });

  /** An adapter's float32 bytes, counted from its PEFT file rather than the registry. */
  function fileBytes(name: string): number {
    let bytes = 0;
    for (const tensor of readSafetensors(exported.get(name)!.adapterSafetensors).tensors.values()) {
      bytes += tensor.data.length * 4;
    }
    return bytes;
  }

  function source(name: string, baseModelSha256: string | null = BASE_SHA): AdapterSource {
    const peft = exported.get(name)!;
    return {
      adapterConfig: peft.adapterConfig,
      safetensors: peft.adapterSafetensors,
      baseModelSha256,
    };
  }

  it('evicts the least recently used adapters by bytes, never a pinned one', () => {
    const [qv, all, head, mlp] = ['qv', 'all', 'head', 'mlp'].map(fileBytes);
    // Room for qv + all + head, not for mlp as well.
    const lru = new AdapterRegistry(model, {
      maxBytes: qv + all + head + mlp - 1,
      baseModelSha256: BASE_SHA,
    });
    try {
      lru.register('qv', source('qv'));
      lru.register('all', source('all'));
      lru.register('head', source('head'));
      expect(lru.bytesUsed).toBe(qv + all + head);
      // Using qv makes all the least recently used; pinning all protects it instead.
      lru.acquire('qv');
      lru.release('qv');
      expect(lru.ids()).toEqual(['all', 'head', 'qv']);
      lru.register('mlp', source('mlp'));
      expect(lru.ids()).toEqual(['head', 'qv', 'mlp']);
      expect(lru.bytesUsed).toBe(head + qv + mlp);

      // Pinned by a running request, head is skipped: qv, now the least recently used, goes.
      lru.acquire('head');
      lru.register('all', source('all'));
      expect(lru.ids()).toEqual(['mlp', 'head', 'all']);
      expect(lru.bytesUsed).toBe(mlp + head + all);
      lru.release('head');
    } finally {
      lru.dispose();
    }
  });

  it('refuses what cannot fit without evicting anything', () => {
    const lru = new AdapterRegistry(model, {
      maxBytes: fileBytes('all') + fileBytes('qv'),
      baseModelSha256: BASE_SHA,
    });
    try {
      lru.register('all', source('all'));
      lru.acquire('all');
      expect(() => lru.register('mlp', source('mlp'))).toThrow(
        expect.objectContaining({ code: 'capacity' }) as Error,
      );
      expect(lru.ids()).toEqual(['all']);
      const small = new AdapterRegistry(model, { maxBytes: fileBytes('all') - 4 });
      expect(() => small.register('all', source('all', null))).toThrow(
        expect.objectContaining({ code: 'too_large' }) as Error,
      );
      lru.release('all');
    } finally {
      lru.dispose();
    }
  });

  it('refuses an adapter trained on another base, naming both hashes', () => {
    const other = 'b'.repeat(64);
    expect(() => registry.register('foreign', source('qv', other))).toThrow(
      new AdapterRegistryError(
        `adapter "foreign" was trained on base weights sha256 ${other}, but the loaded base's weights hash to ${BASE_SHA}`,
        'base_mismatch',
      ),
    );
    expect(registry.has('foreign')).toBe(false);
    // A base without a hash cannot vouch for an adapter that names one.
    const unhashed = new AdapterRegistry(model, { maxBytes: 1 << 20 });
    expect(() => unhashed.register('qv', source('qv'))).toThrow(/no weights hash/);
    // A PEFT adapter from elsewhere carries no lineage and is accepted, as the CLI does.
    unhashed.register('peft', source('qv', null));
    expect(unhashed.ids()).toEqual(['peft']);
    unhashed.dispose();
  });

  it('loads an adapter once for concurrent first uses', async () => {
    const lazy = new AdapterRegistry(model, { maxBytes: 1 << 20, baseModelSha256: BASE_SHA });
    let fetches = 0;
    const fetch = async () => {
      fetches += 1;
      await new Promise((resolve) => setImmediate(resolve));
      return source('head');
    };
    const [a, b] = await Promise.all([lazy.load('head', fetch), lazy.load('head', fetch)]);
    expect(fetches).toBe(1);
    expect(a).toBe(b);
    expect(await lazy.load('head', fetch)).toBe(a);
    expect(fetches).toBe(1);
    lazy.dispose();
  });
});
