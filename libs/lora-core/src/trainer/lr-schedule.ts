/**
 * Learning-rate schedules with transformers' exact shapes (`get_linear_schedule_with_warmup`,
 * `get_cosine_schedule_with_warmup` with `num_cycles = 0.5`, transformers v4.46
 * `optimization.py`), so a run configured like an HF Trainer run follows the same curve.
 *
 * Indexing follows HF too: the multiplier for optimizer step `s` (1-based, the s-th update) is
 * `lambda(s - 1)`, because HF's scheduler is stepped after the optimizer. With warmup the first
 * update therefore uses lr = 0, exactly as in HF.
 */
import type { FineTuneSpec } from '@lorafleet/contracts';

export { LR_SCHEDULERS, type LrSchedulerType } from '@lorafleet/contracts';

/** The spec's schedule fields, as named in the spec, plus the run's length. */
export type LrScheduleOptions = Pick<
  FineTuneSpec['training'],
  'learning_rate' | 'lr_scheduler' | 'warmup_steps'
> & {
  /** Optimizer steps in the whole run (the decay reaches 0 there). */
  totalSteps: number;
};

/** HF's `lr_lambda(current_step)` for a 0-based scheduler step. */
export function lrMultiplier(
  schedulerStep: number,
  opts: Omit<LrScheduleOptions, 'learning_rate'>,
): number {
  const { warmup_steps: warmupSteps, totalSteps } = opts;
  if (schedulerStep < warmupSteps) return schedulerStep / Math.max(1, warmupSteps);
  switch (opts.lr_scheduler) {
    case 'constant':
      return 1;
    case 'linear':
      return Math.max(0, (totalSteps - schedulerStep) / Math.max(1, totalSteps - warmupSteps));
    case 'cosine': {
      const progress = (schedulerStep - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
      // num_cycles = 0.5: one half cosine from 1 down to 0.
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 2 * 0.5 * progress)));
    }
  }
}

/** Learning rate used by optimizer step `step` (1-based). */
export function learningRateAt(step: number, opts: LrScheduleOptions): number {
  if (!Number.isInteger(step) || step < 1) {
    throw new RangeError(`step must be a positive integer (got ${step})`);
  }
  return opts.learning_rate * lrMultiplier(step - 1, opts);
}
