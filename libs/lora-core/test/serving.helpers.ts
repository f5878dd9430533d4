/** Shared by the serving specs: tiny models with four adapters each, and decoding alone. */
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
import { randomizeLoraB, tinyGpt2, tinyLlama } from './trainer.helpers';

/** The lineage hash the fixture's registry and adapters share. */
export const BASE_SHA = 'a'.repeat(64);

type AdapterSpec = Omit<LoraConfig, 'fanInFanOut'>;

/** Four adapters per family: different ranks, scalings (one rsLoRA) and target modules. */
export const ADAPTERS: Record<ServingFamily, Record<string, AdapterSpec>> = {
  llama: {
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
  },
  // GPT-2's head is tied to wte, which LoRA does not target.
  gpt2: {
    qv: { r: 4, alpha: 8, dropout: 0, targetModules: ['c_attn'], useRslora: false },
    all: { r: 8, alpha: 16, dropout: 0, targetModules: 'all-linear', useRslora: false },
    head: { r: 2, alpha: 4, dropout: 0, targetModules: ['c_proj'], useRslora: true },
    mlp: { r: 6, alpha: 3, dropout: 0, targetModules: ['c_fc'], useRslora: false },
  },
};

export type ServingFamily = 'llama' | 'gpt2';

/**
 * A tiny model (Llama: GQA 4:2, untied head; GPT-2: tied head) with the four adapters inside
 * it (for the reference) and registered from their PEFT bytes (for the batch).
 */
export function servingFixture(family: ServingFamily = 'llama'): {
  model: CausalLM;
  registry: AdapterRegistry;
  exported: Map<string, ExportedPeftAdapter>;
} {
  const model = family === 'llama' ? tinyLlama(11) : tinyGpt2(11);
  const registry = new AdapterRegistry(model, { maxBytes: 1 << 24, baseModelSha256: BASE_SHA });
  const exported = new Map<string, ExportedPeftAdapter>();
  Object.entries(ADAPTERS[family]).forEach(([name, cfg], i) => {
    addLoraAdapter(model, name, { ...cfg, fanInFanOut: family === 'gpt2' }, 100 + i);
    setActiveAdapter(model, name);
    randomizeLoraB(model, 200 + i, 0.2);
    const peft = exportPeftAdapter(model, name, `tiny-${family}`);
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
