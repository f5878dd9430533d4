/**
 * The real-size memory path (issue 13) against the plain one, at a non-toy shape (d = 256,
 * vocab 4096): frozen weights in host memory (`*-blas`), the fused LM-head loss that never
 * builds whole logits, and gradient checkpointing. Loss, token accuracy and every LoRA
 * gradient must match the unfused, unchunked path within 1e-5 relative.
 */
import * as tf from '@tensorflow/tfjs';

import {
  SeededRandom,
  buildCausalLM,
  deriveSeed,
  parseModelConfig,
  selectBackend,
  setBlasKernels,
  shiftTargets,
  weightedCorrectCount,
  weightedTokenNllSum,
  type CausalLM,
  type LoraConfig,
  type WeightSource,
} from '../src';
import { relativeError } from './fixture.helpers';

const TOLERANCE = 1e-5;
const VOCAB = 4096;
const BATCH = 2;
const LENGTH = 24;

const LLAMA = {
  model_type: 'llama',
  hidden_size: 256,
  intermediate_size: 512,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 64,
  vocab_size: VOCAB,
  tie_word_embeddings: false,
};

const CONFIGS = {
  gpt2: {
    model_type: 'gpt2',
    n_embd: 256,
    n_layer: 2,
    n_head: 4,
    n_positions: 64,
    vocab_size: VOCAB,
  },
  llama: LLAMA,
  'llama-tied': { ...LLAMA, tie_word_embeddings: true },
} as const;

function build(kind: keyof typeof CONFIGS): CausalLM {
  const source: WeightSource = {
    read(key, shape, init) {
      const count = shape.reduce((a, b) => a * b, 1);
      if (init === 'zeros') return new Float32Array(count);
      if (init === 'ones') return new Float32Array(count).fill(1);
      return new SeededRandom(deriveSeed(11, key)).normal(count, 0.05);
    },
  };
  const model = buildCausalLM(parseModelConfig(CONFIGS[kind]), source, 'lora');
  const lora: LoraConfig = {
    r: 4,
    alpha: 8,
    dropout: 0.1,
    targetModules: 'all-linear',
    useRslora: false,
  };
  model.addAdapter('default', lora, 5);
  // Non-zero B, so every gradient path (A and B) carries signal.
  for (const layer of model.linearLayers()) {
    const adapter = layer.adapters.get('default');
    if (adapter) adapter.b.assign(tf.randomNormal(adapter.b.shape, 0, 0.05, 'float32', 3));
  }
  return model;
}

function batchOf(seed: number): { ids: number[][]; mask: number[][] } {
  const rng = new SeededRandom(seed);
  const ids: number[][] = [];
  const mask: number[][] = [];
  for (let b = 0; b < BATCH; b++) {
    ids.push(Array.from({ length: LENGTH }, () => Math.floor(rng.next() * VOCAB)));
    // Prompt of 5 + b tokens, then completion: only completion positions are scored.
    mask.push(Array.from({ length: LENGTH }, (_, t) => (t >= 5 + b ? 1 : 0)));
  }
  return { ids, mask };
}

interface Result {
  loss: number;
  correct: number;
  grads: Map<string, Float32Array>;
}

function step(model: CausalLM, fused: boolean): Result {
  const { ids, mask } = batchOf(9);
  const shifted = shiftTargets(ids, mask, VOCAB);
  const input = tf.tensor2d(ids, [BATCH, LENGTH], 'int32');
  const vars = model.trainableVariables();
  let correct = 0;
  const { value, grads } = tf.variableGrads(() => {
    const opts = { training: true, dropoutSeed: 42 };
    if (fused) {
      const out = model.forwardLoss(input, undefined, shifted, opts);
      correct = out.correct.dataSync()[0];
      return out.nll;
    }
    const logits = tf.reshape<tf.Rank.R2>(model.forward(input, undefined, opts), [
      BATCH * LENGTH,
      VOCAB,
    ]);
    correct = weightedCorrectCount(logits, shifted).dataSync()[0];
    return weightedTokenNllSum(logits, shifted);
  }, vars);
  const named = new Map<string, Float32Array>();
  for (const [name, variable] of model.namedTrainableVariables()) {
    named.set(name, grads[variable.name].dataSync() as Float32Array);
  }
  const loss = value.dataSync()[0];
  value.dispose();
  for (const g of Object.values(grads)) g.dispose();
  input.dispose();
  return { loss, correct, grads: named };
}

function expectSame(actual: Result, expected: Result): void {
  expect(Math.abs(actual.loss - expected.loss) / Math.abs(expected.loss)).toBeLessThan(TOLERANCE);
  expect(actual.correct).toBe(expected.correct);
  expect([...actual.grads.keys()].sort()).toEqual([...expected.grads.keys()].sort());
  for (const [name, g] of expected.grads) {
    const error = relativeError(actual.grads.get(name)!, g);
    // The name rides along so a failure says which gradient differs.
    expect({ name, ok: error < TOLERANCE, error }).toMatchObject({ name, ok: true });
  }
}

describe.each(['wasm', 'cpu'] as const)('memory path on %s', (host) => {
  afterAll(() => setBlasKernels(host, false));

  // The cpu backend runs the same kernels in plain JavaScript, slowly: one architecture there.
  const kinds = (host === 'wasm' ? Object.keys(CONFIGS) : ['llama']) as Array<keyof typeof CONFIGS>;
  describe.each(kinds)('%s', (kind) => {
    let reference: Result;

    beforeAll(async () => {
      // The reference: plain backend, weights as tensors, whole logits, no checkpointing.
      await selectBackend(host);
      setBlasKernels(host, false);
      const model = build(kind);
      expect(model.hostWeights).toBe(false);
      reference = step(model, false);
      model.dispose();
    });

    it('fused chunked head loss on tensor weights equals whole logits', () => {
      const model = build(kind);
      expectSame(step(model, true), reference);
      model.dispose();
    });

    it('host weights with the fused host head equal the plain path', async () => {
      expect(await selectBackend(`${host}-blas`)).toBe(`${host}-blas`);
      const model = build(kind);
      expect(model.hostWeights).toBe(true);
      expect(model.baseParameters().some((p) => p.host)).toBe(true);
      expectSame(step(model, true), reference);
      expectSame(step(model, false), reference);
      model.dispose();
      setBlasKernels(host, false);
    });

    it('gradient checkpointing gives the same loss and gradients, keeping fewer tensors', async () => {
      expect(await selectBackend(`${host}-blas`)).toBe(`${host}-blas`);
      const model = build(kind);
      model.gradientCheckpointing = true;
      const before = tf.memory().numTensors;
      expectSame(step(model, true), reference);
      // Nothing leaks from the recomputation or the nested gradient pass.
      expect(tf.memory().numTensors).toBe(before);
      model.dispose();
      setBlasKernels(host, false);
    });
  });
});
