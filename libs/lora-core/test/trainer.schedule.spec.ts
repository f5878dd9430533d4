/**
 * Learning-rate schedules at given steps (transformers' formulas, HF's step indexing) and
 * the data schedule (seeded per-epoch order, micro-batches, accumulation groups).
 */
import { computeStepsPerEpoch } from '@lorafleet/data';

import {
  DataSchedule,
  epochOrder,
  learningRateAt,
  lrMultiplier,
  resolveHyperparameters,
  TrainingConfigError,
} from '../src';

describe('learning-rate schedules', () => {
  const base = { learningRate: 1e-3, warmupSteps: 4, totalSteps: 20 };

  it('linear: warmup from 0, then linear decay to 0 at the last step', () => {
    const lr = (step: number) => learningRateAt(step, { ...base, scheduler: 'linear' });
    // HF: the s-th update uses lambda(s-1); warmup lambda(k) = k / warmup.
    expect([1, 2, 3, 4, 5].map(lr)).toEqual([0, 0.25e-3, 0.5e-3, 0.75e-3, 1e-3]);
    // Decay: lambda(k) = (total - k) / (total - warmup).
    expect(lr(6)).toBeCloseTo((1e-3 * 15) / 16, 15);
    expect(lr(13)).toBeCloseTo((1e-3 * 8) / 16, 15);
    expect(lr(20)).toBeCloseTo((1e-3 * 1) / 16, 15);
    expect(lrMultiplier(20, { ...base, scheduler: 'linear' })).toBe(0);
  });

  it('cosine: half a cosine from the peak to 0', () => {
    const lr = (step: number) => learningRateAt(step, { ...base, scheduler: 'cosine' });
    expect(lr(3)).toBeCloseTo(0.5e-3, 15);
    expect(lr(5)).toBeCloseTo(1e-3, 15);
    // Halfway through the decay (k = 4 + 8) the multiplier is 0.5.
    expect(lr(13)).toBeCloseTo(0.5e-3, 15);
    // k = 8: progress 0.25, 0.5·(1 + cos(π/4)).
    expect(lr(9)).toBeCloseTo(1e-3 * 0.5 * (1 + Math.cos(Math.PI / 4)), 15);
    expect(lrMultiplier(20, { ...base, scheduler: 'cosine' })).toBeCloseTo(0, 15);
  });

  it('no warmup starts at the peak; constant stays there', () => {
    expect(learningRateAt(1, { ...base, warmupSteps: 0, scheduler: 'linear' })).toBe(1e-3);
    expect(learningRateAt(1, { ...base, warmupSteps: 0, scheduler: 'cosine' })).toBe(1e-3);
    expect(learningRateAt(17, { ...base, scheduler: 'constant' })).toBe(1e-3);
    expect(() => learningRateAt(0, { ...base, scheduler: 'linear' })).toThrow(RangeError);
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

describe('hyperparameters', () => {
  it('fills defaults and names the bad field', () => {
    expect(resolveHyperparameters({}).learningRate).toBe(2e-4);
    expect(resolveHyperparameters({ batchSize: undefined }).batchSize).toBe(4);
    for (const [field, value] of [
      ['batchSize', 0],
      ['epochs', 1.5],
      ['learningRate', -1],
      ['lrScheduler', 'step'],
      ['adamBeta2', 1],
      ['warmupSteps', -1],
      ['maxSteps', 0],
    ] as const) {
      let caught: unknown;
      try {
        resolveHyperparameters({ [field]: value });
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(TrainingConfigError);
      expect((caught as TrainingConfigError).field).toBe(field);
    }
  });
});
