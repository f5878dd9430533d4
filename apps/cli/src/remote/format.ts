/** Plain-text rendering for the remote commands (tables, durations, progress bars). */
import type {
  FineTuningJob,
  FineTuningJobEstimate,
  FineTuningJobEvent,
} from '@lorafleet/contracts';

/** A left-aligned text table; `null`/`undefined` cells print as `-`. */
export function table(
  headers: string[],
  rows: Array<Array<string | number | null | undefined>>,
): string {
  const cells = rows.map((row) =>
    row.map((c) => (c === null || c === undefined ? '-' : String(c))),
  );
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i]?.length ?? 0)));
  const line = (row: string[]) =>
    row
      .map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [line(headers), ...cells.map(line)].join('\n');
}

/** `key: value` lines, aligned; objects are printed as compact JSON. */
export function keyValues(entries: Array<[string, unknown]>): string {
  const width = Math.max(...entries.map(([k]) => k.length));
  return entries
    .map(([k, v]) => {
      const text =
        v === null || v === undefined
          ? '-'
          : typeof v === 'string'
            ? v
            : typeof v === 'number' || typeof v === 'boolean'
              ? String(v)
              : JSON.stringify(v);
      return `${`${k}:`.padEnd(width + 2)}${text}`;
    })
    .join('\n');
}

export function isoTime(epochSeconds: number | null | undefined): string | null {
  return typeof epochSeconds === 'number' ? new Date(epochSeconds * 1000).toISOString() : null;
}

/** 75 → "1:15", 3725 → "1:02:05". */
export function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

export function progressText(job: FineTuningJob): string {
  const { step, total_steps: total, percent } = job.progress;
  if (!total) return step > 0 ? `step ${step}` : '-';
  return `${step}/${total} (${percent ?? Math.round((100 * step) / total)}%)`;
}

export function jobLines(job: FineTuningJob): string {
  return keyValues([
    ['id', job.id],
    ['status', job.status],
    ['model', job.model],
    ['fine_tuned_model', job.fine_tuned_model],
    ['adapter_id', job.adapter_id],
    ['training_file', job.training_file],
    ['validation_file', job.validation_file],
    ['progress', progressText(job)],
    ['trained_tokens', job.trained_tokens],
    ['hyperparameters', job.hyperparameters],
    ['lora', job.lora],
    ['training', job.training],
    ['worker', job.worker],
    ['backend', job.backend],
    [
      'usage',
      job.usage
        ? `peak memory ${job.usage.peak_memory_mb ?? '?'} MiB, ${job.usage.tokens_per_second === null ? '?' : Math.round(job.usage.tokens_per_second)} tokens/s`
        : null,
    ],
    ['created_at', isoTime(job.created_at)],
    ['finished_at', isoTime(job.finished_at)],
    ['estimated_finish', isoTime(job.estimated_finish)],
    ['metadata', job.metadata],
    ['result_files', job.result_files.length ? job.result_files.join(', ') : null],
    [
      'error',
      job.error
        ? `${job.error.message} (code: ${job.error.code}${job.error.param ? `, param: ${job.error.param}` : ''})`
        : null,
    ],
  ]);
}

export function eventLine(event: FineTuningJobEvent): string {
  const time = isoTime(event.created_at)?.replace('T', ' ').replace('.000Z', 'Z') ?? '';
  return `${time}  ${event.level.padEnd(5)}  ${event.message}`;
}

/** `[#########...........]  45%` with a fixed width. */
export function bar(fraction: number, width = 24): string {
  const f = Math.min(1, Math.max(0, Number.isFinite(fraction) ? fraction : 0));
  const filled = Math.round(f * width);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(Math.floor(f * 100)).padStart(3)}%`;
}

export interface ProgressState {
  job: FineTuningJob;
  /** Latest training loss from the job's metrics events. */
  loss: number | null;
  validLoss: number | null;
  /** Seconds since watching started. */
  elapsedSeconds: number;
  /** Epoch seconds now (for the ETA from `estimated_finish`). */
  nowSeconds: number;
}

/** One progress line: bar, step, loss and ETA. */
export function progressLine(state: ProgressState): string {
  const { job } = state;
  const total = job.progress.total_steps;
  const step = job.progress.step;
  const parts: string[] = [];
  if (total) parts.push(`${bar(step / total)} step ${step}/${total}`);
  else parts.push(`${bar(0)} step ${step}`);
  parts.push(`loss ${state.loss === null ? '-' : state.loss.toFixed(4)}`);
  if (state.validLoss !== null) parts.push(`val ${state.validLoss.toFixed(4)}`);
  const eta =
    job.status === 'running' && job.estimated_finish !== null
      ? Math.max(0, job.estimated_finish - state.nowSeconds)
      : null;
  parts.push(`eta ${eta === null ? '-' : duration(eta)}`);
  parts.push(`elapsed ${duration(state.elapsedSeconds)}`);
  parts.push(job.status);
  return parts.join('  ');
}

/** `jobs create --dry-run`: the API's estimate (POST /v1/fine_tuning/jobs/estimate) as text. */
export function estimateLines(estimate: FineTuningJobEstimate): string {
  const parts = estimate.memory_parts_mb;
  const { quota } = estimate;
  // A DPO estimate counts preference pairs; its tokens cover both sides of every pair.
  const dpo = estimate.method === 'dpo';
  const units = dpo ? 'pairs' : 'examples';
  const summary = keyValues([
    ['model', estimate.model],
    ['training file', estimate.training_file],
    ['method', estimate.method],
    [units, estimate.examples],
    [
      'trained tokens',
      `${estimate.trained_tokens_exact ? '' : '~'}${estimate.trained_tokens} (${estimate.trained_tokens_per_epoch} per epoch${dpo ? ', both sides of each pair' : ''}; ${estimate.target_tokens_per_epoch} of them loss targets)`,
    ],
    [
      'steps',
      `${estimate.total_steps} (${estimate.steps_per_epoch} per epoch, ${Number(estimate.epochs.toFixed(2))} epochs)`,
    ],
    [
      'truncated',
      `${estimate.truncated_examples} ${units} at max_seq_length ${estimate.training.max_seq_length}` +
        (estimate.examples_without_targets > 0
          ? `, ${estimate.examples_without_targets} left with nothing to train on`
          : ''),
    ],
    [
      'peak memory',
      `~${estimate.estimated_peak_memory_mb} MiB (weights ${parts.frozen_weights}, adapter and optimizer ${parts.adapter_and_optimizer}, activations ${parts.activations}, head ${parts.head}, runtime ${parts.runtime})`,
    ],
    [
      'quota',
      quota.fits
        ? `fits (${quota.active_jobs} of ${quota.limit} active jobs, ${quota.rule})`
        : `does not fit: ${quota.message ?? quota.rule}`,
    ],
  ]);
  const backends =
    estimate.backends.length === 0
      ? 'No live training worker: no wall time to estimate.'
      : table(
          ['BACKEND', 'WORKERS', 'MEMORY LIMIT', 'FITS', 'TOKENS/S', 'WALL TIME', 'NOTE'],
          estimate.backends.map((b) => [
            b.backend,
            b.workers,
            b.memory_limit_mb === null ? null : `${b.memory_limit_mb} MiB`,
            b.fits_memory === null ? '?' : b.fits_memory ? 'yes' : 'no',
            b.tokens_per_second === null ? null : Math.round(b.tokens_per_second),
            b.estimated_seconds === null ? null : duration(b.estimated_seconds),
            b.reason,
          ]),
        );
  return `${summary}\n\n${backends}\nNothing was created (dry run).`;
}
