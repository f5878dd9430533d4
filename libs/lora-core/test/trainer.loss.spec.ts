/**
 * The trainer's completion-only loss: masking, agreement with part 1's `causalLmLoss` and
 * with the PyTorch gradients of the gpt2-tiny fixture, and the accumulation identity.
 */
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';

import {
  Trainer,
  causalLmLoss,
  initBackend,
  loadCausalLM,
  loadPeftAdapter,
  shiftTargets,
  weightedCorrectCount,
  weightedTokenNllSum,
  type BackendName,
  type CausalLM,
  type TokenizedSequence,
} from '../src';
import { FIXTURES, readExpected, readInputs, relativeError } from './fixture.helpers';
import { randomizeLoraB, testSpec, tinyGpt2 } from './trainer.helpers';

const LORA = { r: 4, alpha: 8, dropout: 0, targetModules: ['c_attn', 'c_fc'], useRslora: false };

/** Host gradients of the summed masked NLL w.r.t. logits [N, V]. */
function nllAndGrad(logits: number[][], ids: number[][], mask: number[][]) {
  const vocab = logits[0].length;
  const shifted = shiftTargets(ids, mask, vocab);
  const x = tf.tensor2d(logits); // [N, V]
  const { value, grads } = tf.valueAndGrads((l: tf.Tensor) =>
    weightedTokenNllSum(l as tf.Tensor2D, shifted),
  )([x]);
  const out = { value: value.dataSync()[0], grad: Array.from(grads[0].dataSync()) };
  tf.dispose([x, value, grads[0]]);
  return out;
}

describe.each(['cpu', 'wasm'] as BackendName[])('completion-only loss on %s', (backend) => {
  beforeAll(async () => {
    await initBackend(backend);
  });

  it('changing the targets of masked (prompt) positions changes neither loss nor gradient', () => {
    // One row, T = 6, V = 5: tokens 1..2 are the prompt (mask 0), 3..5 the completion.
    const logits = Array.from({ length: 6 }, (_, t) =>
      Array.from({ length: 5 }, (_, v) => Math.sin(1 + t * 5 + v)),
    );
    const mask = [[0, 0, 0, 1, 1, 1]];
    const base = nllAndGrad(logits, [[4, 1, 2, 3, 0, 4]], mask);
    // Prompt tokens (targets of positions 0 and 1) changed: bit-identical results.
    const promptChanged = nllAndGrad(logits, [[0, 3, 4, 3, 0, 4]], mask);
    expect(promptChanged.value).toBe(base.value);
    expect(promptChanged.grad).toEqual(base.grad);
    // A completion token changed: the loss changes.
    const completionChanged = nllAndGrad(logits, [[4, 1, 2, 3, 2, 4]], mask);
    expect(completionChanged.value).not.toBe(base.value);
    expect(completionChanged.grad).not.toEqual(base.grad);
  });

  it('equals causalLmLoss × target count, with the same gradient', () => {
    const model = tinyGpt2(3);
    model.addAdapter('a', LORA, 5);
    randomizeLoraB(model);
    try {
      const rows = [
        [5, 9, 13, 200, 31, 7, 7, 2],
        [17, 4, 90, 100, 268, 0, 0, 0],
      ];
      const mask = [
        [0, 0, 0, 1, 1, 1, 0, 1],
        [0, 0, 1, 1, 1, 0, 0, 0],
      ];
      const ids = tf.tensor2d(rows, undefined, 'int32'); // [2, 8]
      const attention = tf.tensor2d([
        [1, 1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 0, 0, 0],
      ]); // [2, 8]
      const lossMask = tf.tensor2d(mask); // [2, 8]
      const vars = model.trainableVariables();
      const shifted = shiftTargets(rows, mask, 269);
      const ours = tf.variableGrads(
        () =>
          tf.div<tf.Scalar>(
            weightedTokenNllSum(tf.reshape(model.forward(ids, attention), [16, 269]), shifted),
            shifted.count,
          ),
        vars,
      );
      const theirs = tf.variableGrads(
        () => causalLmLoss(model.forward(ids, attention), ids, lossMask),
        vars,
      );
      expect(shifted.count).toBe(7);
      expect(Math.abs(ours.value.dataSync()[0] - theirs.value.dataSync()[0])).toBeLessThan(1e-5);
      for (const v of vars) {
        expect(
          relativeError(ours.grads[v.name].dataSync(), theirs.grads[v.name].dataSync()),
        ).toBeLessThan(1e-5);
      }
      const correct = tf.tidy(
        () =>
          weightedCorrectCount(
            tf.reshape(model.forward(ids, attention), [16, 269]),
            shifted,
          ).dataSync()[0],
      );
      expect(Number.isInteger(correct) && correct >= 0 && correct <= 7).toBe(true);
      tf.dispose([
        ids,
        attention,
        lossMask,
        ours.value,
        theirs.value,
        ...Object.values(ours.grads),
        ...Object.values(theirs.grads),
      ]);
    } finally {
      model.dispose();
    }
  });

  describe('against the PyTorch gradients of the part-1 fixture', () => {
    let model: CausalLM;
    beforeAll(async () => {
      model = await loadCausalLM(join(FIXTURES, 'gpt2-tiny'));
      await loadPeftAdapter(model, 'ref', join(FIXTURES, 'gpt2-tiny-adapter'));
    });
    afterAll(() => model.dispose());

    it('the trainer gradient matches within ‖g − g_ref‖/‖g_ref‖ ≤ 1e-4', async () => {
      const inputs = readInputs('gpt2-tiny');
      const expected = readExpected('gpt2-tiny');
      const train: TokenizedSequence[] = inputs.input_ids.map((ids, b) => {
        const length = inputs.attention_mask[b].reduce((n, m) => n + m, 0);
        return { inputIds: ids.slice(0, length), lossMask: inputs.loss_mask[b].slice(0, length) };
      });
      const trainer = new Trainer({
        model,
        train,
        padTokenId: 0,
        shuffle: false,
        spec: testSpec({
          hyperparameters: { batch_size: 1 },
          training: { gradient_accumulation_steps: 2 },
        }),
      });
      try {
        // Two micro-batches of one row each: accumulation must reproduce the 2-row batch.
        const { loss, gradients } = await trainer.computeGradients([[0], [1]]);
        expect(Math.abs(loss - expected.get('loss_lora')!.data[0])).toBeLessThan(1e-5);
        const r = model.loraConfig('ref').r;
        for (const [name, g] of gradients) {
          const [, path, half] = /^(.+)\.(lora_A|lora_B)$/.exec(name)!;
          const ref = expected.get(`grad.base_model.model.${path}.${half}.weight`)!;
          const [rows, cols] = half === 'lora_A' ? [ref.shape[1], r] : [r, ref.shape[0]];
          const transposed = tf.tidy(() => tf.transpose(tf.tensor2d(g, [rows, cols])).dataSync());
          expect(relativeError(transposed, ref.data)).toBeLessThanOrEqual(1e-4);
        }
      } finally {
        trainer.dispose();
      }
    });
  });

  it('gradient accumulation equals the big batch (uneven lengths and target counts)', async () => {
    const model = tinyGpt2(11);
    model.addAdapter('a', LORA, 5);
    randomizeLoraB(model);
    // Uneven lengths and target counts: averaging per-micro-batch means would be wrong.
    const train: TokenizedSequence[] = [
      { inputIds: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], lossMask: [0, 0, 1, 1, 1, 1, 1, 1, 1, 1] },
      { inputIds: [20, 21, 22], lossMask: [0, 0, 1] },
      { inputIds: [30, 31, 32, 33, 34, 35], lossMask: [0, 0, 0, 0, 1, 1] },
      { inputIds: [40, 41, 42, 43], lossMask: [0, 1, 1, 1] },
    ];
    const trainer = new Trainer({
      model,
      train,
      padTokenId: 268,
      shuffle: false,
      spec: testSpec(),
    });
    try {
      const big = await trainer.computeGradients([[0, 1, 2, 3]]);
      const accumulated = await trainer.computeGradients([[0], [1, 2], [3]]);
      expect(Math.abs(big.loss - accumulated.loss)).toBeLessThan(1e-6);
      for (const [name, g] of big.gradients) {
        expect(relativeError(accumulated.gradients.get(name)!, g)).toBeLessThan(1e-5);
      }
      // Sanity: the naive mean of per-micro-batch means differs, so the test has teeth.
      const parts = await Promise.all(
        [[[0]], [[1, 2]], [[3]]].map((mb) => trainer.computeGradients(mb)),
      );
      const naive = parts.reduce((s, p) => s + p.loss, 0) / parts.length;
      expect(Math.abs(naive - big.loss)).toBeGreaterThan(1e-3);
    } finally {
      trainer.dispose();
      model.dispose();
    }
  });
});
