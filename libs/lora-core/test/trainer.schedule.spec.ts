/**
 * Learning-rate schedules at given steps (transformers' formulas, HF's step indexing) and
 * the data schedule (seeded per-epoch order, micro-batches, accumulation groups).
 */
import type { FineTuneSpec } from '@lorafleet/contracts';
import { computeStepsPerEpoch } from '@lorafleet/data';

import {
  DataSchedule,
  epochOrder,
  learningRateAt,
  lrMultiplier,
  checkFineTuneSpec,
  TrainingConfigError,
} from '../src';
import { testSpec } from './trainer.helpers';

describe('learning-rate schedules', () => {
  const base = { learning_rate: 1e-3, warmup_steps: 4, totalSteps: 20 };

  it('linear: warmup from 0, then linear decay to 0 at the last step', () => {
    const lr = (step: number) => learningRateAt(step, { ...base, lr_scheduler: 'linear' });
    // HF: the s-th update uses lambda(s-1); warmup lambda(k) = k / warmup.
    expect([1, 2, 3, 4, 5].map(lr)).toEqual([0, 0.25e-3, 0.5e-3, 0.75e-3, 1e-3]);
    // Decay: lambda(k) = (total - k) / (total - warmup).
    expect(lr(6)).toBeCloseTo((1e-3 * 15) / 16, 15);
    expect(lr(13)).toBeCloseTo((1e-3 * 8) / 16, 15);
    expect(lr(20)).toBeCloseTo((1e-3 * 1) / 16, 15);
    expect(lrMultiplier(20, { ...base, lr_scheduler: 'linear' })).toBe(0);
  });

  it('cosine: half a cosine from the peak to 0', () => {
    const lr = (step: number) => learningRateAt(step, { ...base, lr_scheduler: 'cosine' });
    expect(lr(3)).toBeCloseTo(0.5e-3, 15);
    expect(lr(5)).toBeCloseTo(1e-3, 15);
    // Halfway through the decay (k = 4 + 8) the multiplier is 0.5.
    expect(lr(13)).toBeCloseTo(0.5e-3, 15);
    // k = 8: progress 0.25, 0.5·(1 + cos(π/4)).
    expect(lr(9)).toBeCloseTo(1e-3 * 0.5 * (1 + Math.cos(Math.PI / 4)), 15);
    expect(lrMultiplier(20, { ...base, lr_scheduler: 'cosine' })).toBeCloseTo(0, 15);
  });

  it('no warmup starts at the peak; constant stays there', () => {
    expect(learningRateAt(1, { ...base, warmup_steps: 0, lr_scheduler: 'linear' })).toBe(1e-3);
    expect(learningRateAt(1, { ...base, warmup_steps: 0, lr_scheduler: 'cosine' })).toBe(1e-3);
    expect(learningRateAt(17, { ...base, lr_scheduler: 'constant' })).toBe(1e-3);
    expect(() => learningRateAt(0, { ...base, lr_scheduler: 'linear' })).toThrow(RangeError);
  });
});

describe('data schedule', () => {
  it('steps per epoch are libs/data’s formula, with short last micro-batch and partial group', () => {
    const schedule = new DataSchedule(11, 3, 2);
    expect(schedule.stepsPerEpoch).toBe(computeStepsPerEpoch(11, 3, 2));
    const order = epochOrder(1, 0, 11, false);
    const plans = [0, 1].map((k) => schedule.plan(order, schedule.cursorAt(k)));
    expect(plans[0].microBatches).toEqual([
      [0, 1, 2],
      [3, 4, 5],
    ]);
    expect(plans[1].microBatches).toEqual([
      [6, 7, 8],
      [9, 10],
    ]);
    expect(plans[1].nextCursor).toBe(11);
    const last = new DataSchedule(7, 3, 2).plan(epochOrder(1, 0, 7, false), 6);
    expect(last.microBatches).toEqual([[6]]);
  });

  it('shuffles per epoch, seeded: a permutation, stable for a seed, different across epochs', () => {
    const a = epochOrder(42, 0, 50, true);
    expect([...a].sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(epochOrder(42, 0, 50, true)).toEqual(a);
    expect(epochOrder(42, 1, 50, true)).not.toEqual(a);
    expect(epochOrder(43, 0, 50, true)).not.toEqual(a);
  });
});

describe('the spec the trainer takes', () => {
  it('passes a resolved spec through and names a bad field by its path in the spec', () => {
    const spec = testSpec();
    expect(checkFineTuneSpec(spec)).toEqual(spec);
    // A DPO spec is trained (issue 20): it passes through with its beta.
    const dpoSpec: FineTuneSpec = { ...spec, method: { type: 'dpo', beta: 0.25 } };
    expect(checkFineTuneSpec(dpoSpec)).toEqual(dpoSpec);
    for (const [field, change] of [
      [
        'hyperparameters.batch_size',
        { hyperparameters: { ...spec.hyperparameters, batch_size: 0 } },
      ],
      ['hyperparameters.n_epochs', { hyperparameters: { ...spec.hyperparameters, n_epochs: 1.5 } }],
      ['training.learning_rate', { training: { ...spec.training, learning_rate: -1 } }],
      ['training.lr_scheduler', { training: { ...spec.training, lr_scheduler: 'step' } }],
      ['training.warmup_steps', { training: { ...spec.training, warmup_steps: -1 } }],
      ['training.max_steps', { training: { ...spec.training, max_steps: 0 } }],
      ['seed', { seed: 0.5 }],
      ['method.beta', { method: { type: 'dpo', beta: 0 } }],
    ] as const) {
      let caught: unknown;
      try {
        checkFineTuneSpec({ ...spec, ...change } as FineTuneSpec);
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(TrainingConfigError);
      expect((caught as TrainingConfigError).field).toBe(field);
    }
  });
});
