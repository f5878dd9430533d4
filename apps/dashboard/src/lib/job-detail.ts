import type { FineTuningJob, JobStatus } from '@lorafleet/contracts';
import { formatMetric } from './format';
import { isTerminal } from './job-status';

/** DESIGN: a job still moving refreshes every 2 s (If-None-Match makes an unchanged poll a 304). */
export const MOVING_POLL_MS = 2000;
export const PAUSED_POLL_MS = 5000;
/** Checkpoints change far less often than progress: reload them every this many polls (~10 s). */
export const CHECKPOINT_POLL_EVERY = 5;

/** The API path of one job; its events, checkpoints and actions hang below it. */
export function jobPath(id: string): string {
  return `/v1/fine_tuning/jobs/${encodeURIComponent(id)}`;
}

/** After the job ends: one more pass for late events, then stop. */
export type FinalSweep = 'none' | 'pending' | 'done';

/**
 * When to poll a job next, given its status and where the final sweep stands: a moving job
 * every 2 s, a paused one every 5 s, a finished one once more 2 s later (events written just
 * after the final status), then never.
 */
export function nextJobPoll(
  status: JobStatus,
  finalSweep: FinalSweep,
): { delayMs: number | null; finalSweep: FinalSweep } {
  if (!isTerminal(status)) {
    return { delayMs: status === 'paused' ? PAUSED_POLL_MS : MOVING_POLL_MS, finalSweep: 'none' };
  }
  if (finalSweep === 'none') return { delayMs: MOVING_POLL_MS, finalSweep: 'pending' };
  return { delayMs: null, finalSweep: 'done' };
}

/** Whether a poll that found the job changed (or sweeping) should reload the checkpoints too. */
export function shouldReloadCheckpoints(poll: {
  statusChanged: boolean;
  pollNumber: number;
  finalSweep: FinalSweep;
}): boolean {
  return (
    poll.statusChanged ||
    poll.pollNumber % CHECKPOINT_POLL_EVERY === 0 ||
    poll.finalSweep === 'pending'
  );
}

/** A configuration value as text: lists joined, numbers as metrics, booleans as yes/no. */
export function displayValue(value: unknown): string {
  if (value === undefined || value === null) return '';
  if (Array.isArray(value)) return value.join(', ');
  if (typeof value === 'number') return formatMetric(value);
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  if (typeof value === 'object') return JSON.stringify(value);
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** `step 40 of 120`, `step 40` while the total is unknown, undefined before the first step. */
export function progressStepText(progress: FineTuningJob['progress']): string | undefined {
  if (progress.total_steps) return `step ${progress.step} of ${progress.total_steps}`;
  return progress.step ? `step ${progress.step}` : undefined;
}

/** The factor LoRA scales B·A by: α/r, or α/√r with rsLoRA. */
export function loraScaling(
  lora: Pick<FineTuningJob['lora'], 'r' | 'alpha' | 'use_rslora'>,
): number {
  return lora.use_rslora ? lora.alpha / Math.sqrt(lora.r) : lora.alpha / lora.r;
}

/** A checkpoint's metrics on one line (`train_loss 1.23 · valid_loss 1.4`), or a dash. */
export function checkpointMetricsText(metrics: Record<string, unknown>): string {
  const entries = Object.entries(metrics);
  return entries.length ? entries.map(([k, v]) => `${k} ${formatMetric(v)}`).join(' · ') : '—';
}
