import type { FineTuningJobEstimate } from '@lorafleet/contracts';
import { formatDuration } from './format';

/**
 * The new-job form's estimate panel (issue 20): what `POST /v1/fine_tuning/jobs/estimate`
 * answered for the form's body, as the lines the page shows. Pure, so it is unit-tested.
 */

const count = (n: number) => n.toLocaleString('en-US');

/** How long after the last edit the form asks for an estimate (ms): one request per pause in typing. */
export const ESTIMATE_DEBOUNCE_MS = 400;

export interface EstimateBackendLine {
  backend: string;
  /** "≈ 3 min 20 s", or "unknown" when the fleet has not measured this model on the backend. */
  time: string;
  /** "fits" / "does not fit" / "" (the workers did not report their memory). */
  memory: string;
  /** Why the time is unknown or the run does not fit; '' when all is well. */
  note: string;
}

export interface EstimateView {
  /** Label/value rows: tokens, steps, memory, quota. */
  rows: [string, string][];
  backends: EstimateBackendLine[];
  /** Shown when no live worker trains: there is no backend to time the run on. */
  noBackends: string | null;
  /** The quota's refusal, shown as a warning before the user submits; null when it fits. */
  quotaProblem: string | null;
}

export function estimateView(estimate: FineTuningJobEstimate): EstimateView {
  const approx = estimate.trained_tokens_exact ? '' : '≈ ';
  const epochs = Number(estimate.epochs.toFixed(2));
  const { quota } = estimate;
  // A DPO estimate counts preference pairs, and its tokens cover both sides of every pair.
  const dpo = estimate.method === 'dpo';
  const rows: [string, string][] = [
    [
      'Trained tokens',
      `${approx}${count(estimate.trained_tokens)} (${count(estimate.trained_tokens_per_epoch)} per epoch${dpo ? ' over both sides of each pair' : ''}, ${count(estimate.target_tokens_per_epoch)} of them trained on)`,
    ],
    [
      'Steps',
      `${count(estimate.total_steps)} ${estimate.total_steps === 1 ? 'step' : 'steps'}: ${count(estimate.steps_per_epoch)} per epoch × ${epochs} ${epochs === 1 ? 'epoch' : 'epochs'}`,
    ],
    ['Peak memory', `≈ ${count(estimate.estimated_peak_memory_mb)} MiB`],
    [
      'Quota',
      quota.fits
        ? `fits (${quota.active_jobs} of ${quota.limit} active jobs)`
        : `full (${quota.active_jobs} of ${quota.limit} active jobs)`,
    ],
  ];
  if (estimate.truncated_examples > 0) {
    rows.splice(2, 0, [
      'Truncated',
      dpo
        ? `${count(estimate.truncated_examples)} of ${count(estimate.examples)} pairs have a side cut at ${estimate.training.max_seq_length} tokens`
        : `${count(estimate.truncated_examples)} of ${count(estimate.examples)} examples are cut at ${estimate.training.max_seq_length} tokens`,
    ]);
  }
  return {
    rows,
    backends: estimate.backends.map((b) => ({
      backend: b.backend,
      time: b.estimated_seconds === null ? 'unknown' : `≈ ${formatDuration(b.estimated_seconds)}`,
      memory: b.fits_memory === null ? '' : b.fits_memory ? 'fits' : 'does not fit',
      note: b.reason ?? '',
    })),
    noBackends:
      estimate.backends.length === 0
        ? 'No training worker is running, so there is no wall time to estimate.'
        : null,
    quotaProblem: quota.fits ? null : quota.message,
  };
}
