import { JOB_STATUS_ORDER, isTerminal } from './job-status';
import {
  MOVING_POLL_MS,
  PAUSED_POLL_MS,
  checkpointMetricsText,
  displayValue,
  jobPath,
  loraScaling,
  nextJobPoll,
  progressStepText,
  shouldReloadCheckpoints,
} from './job-detail';

describe('job detail polling schedule', () => {
  it('polls a moving job every 2 s and a paused one every 5 s', () => {
    for (const status of JOB_STATUS_ORDER.filter((s) => !isTerminal(s))) {
      for (const sweep of ['none', 'pending', 'done'] as const) {
        expect(nextJobPoll(status, sweep)).toEqual({
          delayMs: status === 'paused' ? PAUSED_POLL_MS : MOVING_POLL_MS,
          finalSweep: 'none',
        });
      }
    }
  });

  it('polls a finished job once more, then stops', () => {
    for (const status of ['succeeded', 'failed', 'cancelled'] as const) {
      const first = nextJobPoll(status, 'none');
      expect(first).toEqual({ delayMs: MOVING_POLL_MS, finalSweep: 'pending' });
      expect(nextJobPoll(status, first.finalSweep)).toEqual({ delayMs: null, finalSweep: 'done' });
      expect(nextJobPoll(status, 'done')).toEqual({ delayMs: null, finalSweep: 'done' });
    }
  });

  it('reloads checkpoints on a status change, every fifth poll and on the final sweep', () => {
    const quiet = { statusChanged: false, pollNumber: 3, finalSweep: 'none' } as const;
    expect(shouldReloadCheckpoints(quiet)).toBe(false);
    expect(shouldReloadCheckpoints({ ...quiet, statusChanged: true })).toBe(true);
    expect(shouldReloadCheckpoints({ ...quiet, pollNumber: 10 })).toBe(true);
    expect(shouldReloadCheckpoints({ ...quiet, finalSweep: 'pending' })).toBe(true);
    expect(shouldReloadCheckpoints({ ...quiet, finalSweep: 'done' })).toBe(false);
  });

  it('escapes the job id in its path', () => {
    expect(jobPath('ftjob-1')).toBe('/v1/fine_tuning/jobs/ftjob-1');
    expect(jobPath('a/../b')).toBe('/v1/fine_tuning/jobs/a%2F..%2Fb');
  });
});

describe('job detail text', () => {
  it('shows configuration values of every kind', () => {
    expect(displayValue(undefined)).toBe('');
    expect(displayValue(null)).toBe('');
    expect(displayValue(['q_proj', 'v_proj'])).toBe('q_proj, v_proj');
    expect(displayValue(0.0002)).toBe('2.00e-4');
    expect(displayValue(0.25)).toBe('0.25');
    expect(displayValue(true)).toBe('yes');
    expect(displayValue(false)).toBe('no');
    expect(displayValue({ team: 'a' })).toBe('{"team":"a"}');
    expect(displayValue('auto')).toBe('auto');
  });

  it('says which step a run is on, with the total once known', () => {
    const progress = { step: 40, total_steps: 120, epoch: 1, percent: 33 };
    expect(progressStepText(progress)).toBe('step 40 of 120');
    expect(progressStepText({ ...progress, total_steps: null })).toBe('step 40');
    expect(progressStepText({ ...progress, step: 0, total_steps: null })).toBeUndefined();
  });

  it('scales LoRA by alpha/r, or alpha/sqrt(r) with rsLoRA', () => {
    expect(loraScaling({ r: 8, alpha: 16, use_rslora: false })).toBe(2);
    expect(loraScaling({ r: 16, alpha: 16, use_rslora: true })).toBe(4);
  });

  it("puts a checkpoint's metrics on one line", () => {
    expect(checkpointMetricsText({})).toBe('—');
    expect(checkpointMetricsText({ train_loss: 1.5, valid_loss: 2 })).toBe(
      'train_loss 1.5 · valid_loss 2',
    );
  });
});
