/** Shared by the serving specs: a tiny Llama with four adapters, and decoding alone. */
import {
  AdapterRegistry,
  KvCacheDecoder,
  addLoraAdapter,
  exportPeftAdapter,
  setActiveAdapter,
  type CausalLM,
  type ExportedPeftAdapter,
  type LoraConfig,
} from '../src';
import { randomizeLoraB, tinyLlama } from './trainer.helpers';

/** The lineage hash the fixture's registry and adapters share. */
export const BASE_SHA = 'a'.repeat(64);

export const ADAPTERS: Record<string, Omit<LoraConfig, 'fanInFanOut'>> = {
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
export function servingFixture(): {
  model: CausalLM;
  registry: AdapterRegistry;
  exported: Map<string, ExportedPeftAdapter>;
} {
  const model = tinyLlama(11);
  const registry = new AdapterRegistry(model, { maxBytes: 1 << 24, baseModelSha256: BASE_SHA });
  const exported = new Map<string, ExportedPeftAdapter>();
  Object.entries(ADAPTERS).forEach(([name, cfg], i) => {
    addLoraAdapter(model, name, { ...cfg, fanInFanOut: false }, 100 + i);
    setActiveAdapter(model, name);
    randomizeLoraB(model, 200 + i, 0.2);
    const peft = exportPeftAdapter(model, name, 'tiny-llama');
    exported.set(name, peft);
    registry.register(name, {
      adapterConfig: peft.adapterConfig,
      safetensors: peft.adapterSafetensors,
      baseModelSha256: BASE_SHA,
    });
  });
  return { model, registry, exported };
}

/** A request decoded alone by the single-sequence decoder: logits per step, greedy tokens. */
export function decodeAlone(
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

export function argmaxOf(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}
