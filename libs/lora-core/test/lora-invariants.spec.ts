/**
 * PEFT's LoRA invariants on tiny random models, on every offline backend:
 * B = 0 gives the base output; merged equals unmerged; unmerge restores the weights;
 * a training step changes only LoRA variables; export → import round-trips bit-exactly;
 * adapters switch without reloading base weights.
 */
import * as tf from '@tensorflow/tfjs';

import {
  addLoraAdapter,
  causalLmLoss,
  createRandomCausalLM,
  disableAdapters,
  enableAdapters,
  exportPeftAdapter,
  importPeftAdapter,
  initBackend,
  mergeAdapter,
  parseModelConfig,
  setActiveAdapter,
  unmergeAdapter,
  type BackendName,
  type CausalLM,
  type LoraConfig,
  type ModelConfig,
} from '../src';
import { maxAbsDiff } from './fixture.helpers';

const TINY_CONFIGS: Record<string, ModelConfig> = {
  gpt2: parseModelConfig({
    model_type: 'gpt2',
    vocab_size: 40,
    n_embd: 16,
    n_head: 2,
    n_layer: 2,
    n_positions: 16,
  }),
  llama: parseModelConfig({
    model_type: 'llama',
    vocab_size: 40,
    hidden_size: 16,
    intermediate_size: 24,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    num_hidden_layers: 2,
    max_position_embeddings: 32,
  }),
};

const LORA: LoraConfig = {
  r: 4,
  alpha: 8,
  dropout: 0,
  targetModules: 'all-linear',
  useRslora: false,
};
const IDS = [
  [1, 5, 9, 2, 7, 3],
  [4, 4, 8, 0, 11, 6],
];
const MASK = [
  [1, 1, 1, 1, 1, 1],
  [1, 1, 1, 1, 0, 0],
];

function logits(model: CausalLM): Float32Array {
  return tf.tidy(
    () =>
      model
        .forward(tf.tensor2d(IDS, undefined, 'int32'), tf.tensor2d(MASK))
        .dataSync() as Float32Array,
  );
}

/** Gives every B a non-zero value so the adapter actually changes the output. */
function perturbB(model: CausalLM, name: string, seed: number): void {
  for (const layer of model.linearLayers()) {
    const adapter = layer.adapters.get(name);
    if (adapter) adapter.b.assign(tf.randomNormal(adapter.b.shape, 0, 0.3, 'float32', seed++));
  }
}

function baseWeights(model: CausalLM): Map<string, Float32Array> {
  return new Map(
    model.baseParameters().map((p) => [p.key, new Float32Array(p.tensor().dataSync())]),
  );
}

describe.each<BackendName>(['cpu', 'wasm'])('LoRA invariants on %s', (backend) => {
  beforeAll(async () => {
    expect(await initBackend(backend)).toBe(backend);
  });

  describe.each(Object.keys(TINY_CONFIGS))('%s', (arch) => {
    let model: CausalLM;
    beforeEach(() => {
      model = createRandomCausalLM(TINY_CONFIGS[arch], 7);
    });
    afterEach(() => model.dispose());

    it('B = 0 gives the base output exactly', () => {
      const base = logits(model);
      addLoraAdapter(model, 'a', LORA, 1);
      expect(model.activeAdapter).toBe('a');
      expect(Array.from(logits(model))).toEqual(Array.from(base));
    });

    it('merged equals unmerged within 1e-5, and unmerge restores the weights', () => {
      const before = baseWeights(model);
      const base = logits(model);
      addLoraAdapter(model, 'a', LORA, 1);
      perturbB(model, 'a', 11);
      const unmerged = logits(model);
      mergeAdapter(model);
      expect(model.isMerged()).toBe(true);
      const merged = logits(model);
      expect(maxAbsDiff(merged, unmerged)).toBeLessThanOrEqual(1e-5);
      expect(maxAbsDiff(merged, base)).toBeGreaterThan(1e-3); // the adapter does change the output
      unmergeAdapter(model);
      expect(model.isMerged()).toBe(false);
      for (const [key, weights] of baseWeights(model)) {
        expect(maxAbsDiff(weights, before.get(key)!)).toBeLessThanOrEqual(1e-6);
      }
      expect(maxAbsDiff(logits(model), unmerged)).toBeLessThanOrEqual(1e-5);
    });

    it('disable gives the base output; enable restores the adapter', () => {
      const base = logits(model);
      addLoraAdapter(model, 'a', LORA, 1);
      perturbB(model, 'a', 3);
      const adapted = logits(model);
      mergeAdapter(model);
      disableAdapters(model); // unmerges first, as PEFT's disable_adapter does
      expect(maxAbsDiff(logits(model), base)).toBeLessThanOrEqual(1e-5);
      expect(model.trainableVariables()).toHaveLength(0);
      enableAdapters(model);
      expect(maxAbsDiff(logits(model), adapted)).toBeLessThanOrEqual(1e-5);
    });

    it('a training step changes only the active LoRA variables', () => {
      addLoraAdapter(model, 'a', LORA, 1);
      addLoraAdapter(
        model,
        'b',
        { ...LORA, targetModules: arch === 'gpt2' ? ['c_attn'] : ['q_proj', 'v_proj'] },
        2,
      );
      const baseBefore = baseWeights(model);
      const adapterB = model.adapterWeights('b');
      const trainable = model.trainableVariables();
      expect(trainable.length).toBe(2 * model.resolveTargets(LORA).length);
      const before = trainable.map((v) => new Float32Array(v.dataSync()));
      const optimizer = tf.train.sgd(0.5);
      const ids = tf.tensor2d(IDS, undefined, 'int32');
      const mask = tf.tensor2d(MASK);
      // Two steps: after the first, B ≠ 0 so A receives gradient as well.
      for (let step = 0; step < 2; step++) {
        const loss = optimizer.minimize(
          () => causalLmLoss(model.forward(ids, mask, { training: true }), ids, mask),
          true,
          trainable,
        );
        loss?.dispose();
      }
      tf.dispose([ids, mask]);
      optimizer.dispose();
      trainable.forEach((v, i) => expect(maxAbsDiff(v.dataSync(), before[i])).toBeGreaterThan(0));
      for (const [key, weights] of baseWeights(model)) expect(weights).toEqual(baseBefore.get(key));
      for (const [path, w] of model.adapterWeights('b')) {
        expect(w.a).toEqual(adapterB.get(path)!.a);
        expect(w.b).toEqual(adapterB.get(path)!.b);
      }
      // Base weights are plain tensors: no gradient, no optimizer state.
      expect(model.baseParameters().every((p) => !(p.tensor() instanceof tf.Variable))).toBe(true);
    });

    it('export then import round-trips bit-exactly', () => {
      addLoraAdapter(model, 'a', { ...LORA, useRslora: true }, 5);
      perturbB(model, 'a', 21);
      const exported = exportPeftAdapter(model, 'a', `tiny-${arch}`);
      const other = createRandomCausalLM(TINY_CONFIGS[arch], 7);
      try {
        importPeftAdapter(
          other,
          'a',
          JSON.stringify(exported.adapterConfig),
          exported.adapterSafetensors,
        );
        expect(other.loraConfig('a')).toEqual(model.loraConfig('a'));
        for (const [path, w] of model.adapterWeights('a')) {
          const got = other.adapterWeights('a').get(path)!;
          expect(new Uint32Array(got.a.buffer)).toEqual(new Uint32Array(w.a.buffer));
          expect(new Uint32Array(got.b.buffer)).toEqual(new Uint32Array(w.b.buffer));
        }
        expect(Array.from(logits(other))).toEqual(Array.from(logits(model)));
        const again = exportPeftAdapter(other, 'a', `tiny-${arch}`);
        expect(Array.from(again.adapterSafetensors)).toEqual(
          Array.from(exported.adapterSafetensors),
        );
      } finally {
        other.dispose();
      }
    });

    it('switches between named adapters without touching base weights', () => {
      const base = baseWeights(model);
      addLoraAdapter(model, 'first', LORA, 1);
      addLoraAdapter(model, 'second', { ...LORA, r: 2 }, 2);
      perturbB(model, 'first', 31);
      perturbB(model, 'second', 41);
      expect(model.activeAdapter).toBe('first');
      const first = logits(model);
      setActiveAdapter(model, 'second');
      const second = logits(model);
      expect(maxAbsDiff(first, second)).toBeGreaterThan(1e-3);
      setActiveAdapter(model, 'first');
      expect(Array.from(logits(model))).toEqual(Array.from(first));
      for (const [key, weights] of baseWeights(model)) expect(weights).toEqual(base.get(key));
      expect(
        model.namedTrainableVariables().get(`${model.resolveTargets(LORA)[0].path}.lora_A`)!
          .shape[1],
      ).toBe(4);
    });
  });
});
