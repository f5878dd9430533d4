/**
 * The DPO loss (train/dpo.loss.ts) against the independent PyTorch reference
 * (tools/reference/generate_dpo_fixtures.py): loss, per-pair losses, rewards, sequence
 * log-probs and LoRA A/B gradients on gpt2-tiny (tied head: the frozen fused head, or the host
 * head on wasm-blas) and llama-tiny (adapter on lm_head: the trainable head path).
 *
 * Tolerances: relative 1e-5 for the loss, losses, rewards and log-probs, and
 * ‖g − g_ref‖/‖g_ref‖ ≤ 1e-5 for every adapter matrix's gradient, on every backend (float32; the
 * reference in float64). webgpu runs here on Dawn over llvmpipe, with its fused cross-entropy
 * kernels in the head.
 */
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import {
  buildPreferenceBatch,
  parsePreferenceJsonl,
  tokenizePreferencePair,
  type PreferenceBatch,
} from '@lorafleet/data';

import {
  DEFAULT_DPO_BETA,
  buildDpoRows,
  combineDpoMetrics,
  disposeDpoRows,
  dpoStep,
  loadCausalLM,
  loadPeftAdapter,
  referenceLogProbs,
  selectBackend,
  sequenceLogProbs,
  type CausalLM,
  type DpoStepResult,
  type RequestedBackend,
} from '../src';
import { FIXTURES, readExpected, relativeError } from './fixture.helpers';
import { tinyGpt2, tinyTokenizer } from './trainer.helpers';

const TOLERANCE = 1e-5;

const LORA_C_ATTN = {
  r: 4,
  alpha: 8,
  dropout: 0,
  targetModules: ['c_attn', 'c_fc'],
  useRslora: false,
};

interface DpoInputs {
  beta: number;
  pairs: number;
  input_ids: number[][];
  attention_mask: number[][];
  loss_mask: number[][];
}

function readDpoFixture(name: string) {
  const inputs = JSON.parse(
    readFileSync(join(FIXTURES, `dpo-${name}-inputs.json`), 'utf8'),
  ) as DpoInputs;
  const batch: PreferenceBatch = {
    pairs: inputs.pairs,
    inputIds: inputs.input_ids,
    attentionMask: inputs.attention_mask,
    lossMask: inputs.loss_mask,
  };
  return { beta: inputs.beta, batch, expected: readExpected(`dpo-${name}`) };
}

/** ‖a − b‖ / ‖b‖. */
const rel = relativeError;

/** Measured errors; written to $PARITY_REPORT (a file path) when set, for the issue note. */
const figures: Record<string, number> = {};
afterAll(async () => {
  const target = process.env.PARITY_REPORT;
  if (target) await writeFile(target, `${JSON.stringify(figures, null, 2)}\n`);
});

const CASES: Array<[RequestedBackend, string]> = (
  ['cpu', 'wasm', 'wasm-blas', 'webgpu'] as RequestedBackend[]
).flatMap((backend) =>
  ['gpt2-tiny', 'llama-tiny'].map((name): [RequestedBackend, string] => [backend, name]),
);

describe.each(CASES)('DPO parity with PyTorch on %s: %s', (backend, name) => {
  let model: CausalLM;
  const { beta, batch, expected } = readDpoFixture(name);
  const want = (key: string) => expected.get(key)!.data;

  beforeAll(async () => {
    expect(await selectBackend(backend)).toBe(backend);
    model = await loadCausalLM(join(FIXTURES, name));
    await loadPeftAdapter(model, 'ref', join(FIXTURES, `${name}-adapter`));
  });
  afterAll(() => model.dispose());

  it('reference log-probs are the base model, computed without the adapter', async () => {
    const rows = buildDpoRows(batch, model.config.vocabSize);
    try {
      const reference = await referenceLogProbs(model, rows);
      const error = rel([...reference.chosen, ...reference.rejected], want('reference_logps'));
      figures[`${backend}/${name}/reference_logps/rel`] = error;
      expect(error).toBeLessThanOrEqual(TOLERANCE);
      // The model is left as it was: the adapter active, enabled and trainable.
      expect(model.activeAdapter).toBe('ref');
      expect(model.adaptersDisabled).toBe(false);
      expect(model.trainableVariables().length).toBeGreaterThan(0);
      const policy = tf.tidy(() => sequenceLogProbs(model, rows));
      expect(rel(await policy.data(), want('policy_logps'))).toBeLessThanOrEqual(TOLERANCE);
      policy.dispose();
    } finally {
      disposeDpoRows(rows);
    }
  });

  it('loss, rewards and LoRA gradients match within the tolerance', async () => {
    const named = model.namedTrainableVariables();
    const result = await dpoStep(model, batch, { beta });
    try {
      const loss = (await result.loss.data())[0];
      const lossError = Math.abs(loss - want('loss')[0]) / Math.abs(want('loss')[0]);
      figures[`${backend}/${name}/loss/rel`] = lossError;
      expect(lossError).toBeLessThanOrEqual(TOLERANCE);

      const pairs = batch.pairs;
      const mean = (key: string) => want(key).reduce((s, v) => s + v, 0) / pairs;
      const { metrics } = result;
      expect(metrics.pairs).toBe(pairs);
      expect(Math.abs(metrics.loss - want('loss')[0])).toBeLessThanOrEqual(
        TOLERANCE * want('loss')[0],
      );
      const chosen = mean('rewards_chosen');
      const rejected = mean('rewards_rejected');
      for (const [ours, theirs] of [
        [metrics.rewardsChosen, chosen],
        [metrics.rewardsRejected, rejected],
        [metrics.margin, chosen - rejected],
      ]) {
        expect(Math.abs(ours - theirs)).toBeLessThanOrEqual(TOLERANCE * Math.abs(theirs));
      }
      const wins = want('rewards_chosen').filter((c, i) => c > want('rewards_rejected')[i]).length;
      expect(metrics.accuracy).toBe(wins / pairs);
      // The fixtures have both winning and losing pairs somewhere, so accuracy is informative.
      expect(wins).toBeGreaterThan(0);

      let checked = 0;
      let worst = 0;
      for (const [varName, variable] of named) {
        const [, path, half] = /^(.+)\.(lora_A|lora_B)$/.exec(varName)!;
        const ref = expected.get(`grad.base_model.model.${path}.${half}.weight`)!;
        // tfjs gradients are [in, r] / [r, out]; the reference holds PEFT's transposes.
        const transposed = tf.transpose(result.grads[variable.name]);
        const ours = await transposed.data(); // asynchronous: webgpu has no synchronous read
        transposed.dispose();
        expect(ref.shape).toEqual([variable.shape[1], variable.shape[0]]);
        const error = rel(ours, ref.data);
        worst = Math.max(worst, error);
        expect(error).toBeLessThanOrEqual(TOLERANCE);
        checked++;
      }
      figures[`${backend}/${name}/grad_max_rel`] = worst;
      expect(checked).toBe([...expected.keys()].filter((k) => k.startsWith('grad.')).length);
    } finally {
      disposeStep(result);
    }
  });
});

function disposeStep(result: DpoStepResult): void {
  result.loss.dispose();
  tf.dispose(Object.values(result.grads));
}

describe('DPO step invariants (cpu, gpt2-tiny)', () => {
  let model: CausalLM;
  const { batch } = readDpoFixture('gpt2-tiny');

  beforeAll(async () => {
    await selectBackend('cpu');
    model = await loadCausalLM(join(FIXTURES, 'gpt2-tiny'));
  });
  afterAll(() => model.dispose());

  it('a fresh adapter (B = 0) is the reference: loss log 2, rewards 0, no pair won', async () => {
    model.addAdapter('fresh', LORA_C_ATTN, 7);
    try {
      const result = await dpoStep(model, batch);
      expect((await result.loss.data())[0]).toBeCloseTo(Math.log(2), 6);
      expect(result.metrics).toMatchObject({ rewardsChosen: 0, rewardsRejected: 0, accuracy: 0 });
      // B gets a gradient (A's is zero through B = 0): training can move off the reference.
      const gradB = model.namedTrainableVariables().get('transformer.h.0.attn.c_attn.lora_B')!;
      const norm = tf.tidy(() => tf.norm(result.grads[gradB.name]).dataSync()[0]);
      expect(norm).toBeGreaterThan(0);
      disposeStep(result);
    } finally {
      model.deleteAdapter('fresh');
    }
  });

  it('micro-batches with the group divisor add up to the whole batch (accumulation)', async () => {
    await loadPeftAdapter(model, 'ref', join(FIXTURES, 'gpt2-tiny-adapter'));
    try {
      const pick = (pairs: number[]): PreferenceBatch => {
        const rows = [...pairs, ...pairs.map((p) => p + batch.pairs)];
        return {
          pairs: pairs.length,
          inputIds: rows.map((r) => batch.inputIds[r]),
          attentionMask: rows.map((r) => batch.attentionMask[r]),
          lossMask: rows.map((r) => batch.lossMask[r]),
        };
      };
      const before = tf.memory().numTensors;
      disposeStep(await dpoStep(model, batch, { dropoutSeed: 3 }));
      // Every intermediate (rows, reference pass, policy pass, metrics) is released.
      expect(tf.memory().numTensors).toBe(before);
      const whole = await dpoStep(model, batch);
      const first = await dpoStep(model, pick([0, 2]), { divisor: 3 });
      const second = await dpoStep(model, pick([1]), { divisor: 3 });
      const sumLoss = (await first.loss.data())[0] + (await second.loss.data())[0];
      expect(sumLoss).toBeCloseTo((await whole.loss.data())[0], 6);
      for (const [key, grad] of Object.entries(whole.grads)) {
        const summed = tf.tidy(() => tf.add(first.grads[key], second.grads[key]).dataSync());
        expect(rel(summed, grad.dataSync())).toBeLessThanOrEqual(1e-6);
      }
      const combined = combineDpoMetrics([first.metrics, second.metrics]);
      expect(combined.pairs).toBe(3);
      for (const key of ['loss', 'rewardsChosen', 'rewardsRejected', 'margin', 'accuracy'] as const)
        expect(combined[key]).toBeCloseTo(whole.metrics[key], 6);
      [whole, first, second].forEach(disposeStep);
    } finally {
      model.deleteAdapter('ref');
    }
  });

  it('cached reference log-probs give the same step; a base-model pass refuses merged weights', async () => {
    await loadPeftAdapter(model, 'ref', join(FIXTURES, 'gpt2-tiny-adapter'));
    const rows = buildDpoRows(batch, model.config.vocabSize);
    try {
      const reference = await referenceLogProbs(model, rows);
      const cached = await dpoStep(model, batch, { reference, beta: 0.5 });
      const fresh = await dpoStep(model, batch, { beta: 0.5 });
      expect((await cached.loss.data())[0]).toBe((await fresh.loss.data())[0]);
      expect(cached.metrics).toEqual(fresh.metrics);
      [cached, fresh].forEach(disposeStep);

      model.mergeAdapter('ref');
      await expect(referenceLogProbs(model, rows)).rejects.toThrow(
        'a base-model pass needs unmerged adapters',
      );
      model.unmergeAdapter();
      await expect(dpoStep(model, batch, { beta: 0 })).rejects.toThrow(
        'DPO beta must be a positive number, got 0',
      );
      expect(DEFAULT_DPO_BETA).toBe(0.1);
    } finally {
      disposeDpoRows(rows);
      model.deleteAdapter('ref');
    }
  });
});

describe('DPO from a preference JSONL file (wasm, tiny-random-gpt2 tokenizer)', () => {
  it('parses, tokenizes, batches and learns the preference with a few descent steps', async () => {
    await selectBackend('wasm');
    const line = (prompt: string, chosen: string, rejected: string) =>
      JSON.stringify({
        input: { messages: [{ role: 'user', content: prompt }] },
        preferred_output: [{ role: 'assistant', content: chosen }],
        non_preferred_output: [{ role: 'assistant', content: rejected }],
      });
    const jsonl = [
      line('Say hi', 'hi', 'no'),
      line('Sky color?', 'blue', 'green'),
      line('The quick brown', 'fox', 'cat'),
    ].join('\n');
    const tokenizer = await tinyTokenizer();
    const pairs = parsePreferenceJsonl(jsonl).map((p) =>
      tokenizePreferencePair(p, tokenizer, { maxSeqLength: 64 }),
    );
    const batch = buildPreferenceBatch(pairs, { padTokenId: tokenizer.padTokenId });
    const model = tinyGpt2();
    try {
      model.addAdapter('dpo', { ...LORA_C_ATTN, dropout: 0.1 }, 11);
      const variables = model.namedTrainableVariables();
      const rows = buildDpoRows(batch, model.config.vocabSize);
      const reference = await referenceLogProbs(model, rows);
      disposeDpoRows(rows);
      const history: number[] = [];
      for (let step = 0; step < 4; step++) {
        const result = await dpoStep(model, batch, { reference, dropoutSeed: step });
        history.push(result.metrics.loss);
        // Plain gradient descent: enough to show the loss pulls chosen above rejected.
        tf.tidy(() => {
          for (const variable of variables.values())
            variable.assign(tf.sub(variable, tf.mul(result.grads[variable.name], 2)));
        });
        disposeStep(result);
      }
      const last = await dpoStep(model, batch, { reference });
      expect(history[0]).toBeCloseTo(Math.log(2), 6);
      // Measured: 0.693 → 0.16 after four steps.
      expect(last.metrics.loss).toBeLessThan(0.4);
      expect(last.metrics.margin).toBeGreaterThan(0);
      expect(last.metrics.accuracy).toBe(1);
      // The reference is the base model: the adapter's pull shows in the rewards, not in it.
      const again = buildDpoRows(batch, model.config.vocabSize);
      expect(await referenceLogProbs(model, again)).toEqual(reference);
      disposeDpoRows(again);
      disposeStep(last);
    } finally {
      model.dispose();
    }
  });
});
