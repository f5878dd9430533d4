import type { FineTuningJob } from '@lorafleet/contracts';

const MINUTE = 60;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** 42 → "42 s", 185 → "3 min 05 s", 7260 → "2 h 01 min", 200000 → "2 d 7 h". */
export function formatDuration(totalSeconds: number): string {
  const s = Math.max(0, Math.round(totalSeconds));
  if (s < MINUTE) return `${s} s`;
  if (s < HOUR) {
    const m = Math.floor(s / MINUTE);
    return `${m} min ${String(s % MINUTE).padStart(2, '0')} s`;
  }
  if (s < DAY) {
    const h = Math.floor(s / HOUR);
    return `${h} h ${String(Math.floor((s % HOUR) / MINUTE)).padStart(2, '0')} min`;
  }
  return `${Math.floor(s / DAY)} d ${Math.floor((s % DAY) / HOUR)} h`;
}

/** A unix time relative to now: "just now", "5 min ago", "in 2 h". */
export function formatRelative(unixSeconds: number, nowMs: number): string {
  const delta = Math.round(unixSeconds - nowMs / 1000);
  const abs = Math.abs(delta);
  if (abs < 5) return 'just now';
  let text: string;
  if (abs < MINUTE) text = `${abs} s`;
  else if (abs < HOUR) text = `${Math.floor(abs / MINUTE)} min`;
  else if (abs < DAY) text = `${Math.floor(abs / HOUR)} h`;
  else text = `${Math.floor(abs / DAY)} d`;
  return delta < 0 ? `${text} ago` : `in ${text}`;
}

const pad = (n: number) => String(n).padStart(2, '0');

/** Local wall-clock time, `YYYY-MM-DD HH:MM:SS` (sortable, unambiguous in every locale). */
export function formatTimestamp(unixSeconds: number): string {
  const d = new Date(unixSeconds * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** ETA column: time left for a job still moving, "Done" once it succeeded, else a dash. */
export function formatEta(
  job: Pick<FineTuningJob, 'status' | 'estimated_finish'>,
  nowMs: number,
): string {
  if (job.status === 'succeeded') return 'Done';
  // A queued job's estimate is stale (from an earlier attempt, before a pause or hand-back).
  if (job.status === 'queued') return 'Waiting for a worker';
  if (job.status !== 'running') return '—';
  if (job.estimated_finish === null) return 'Estimating…';
  const left = job.estimated_finish - nowMs / 1000;
  return left <= 1 ? 'Any moment' : `${formatDuration(left)} left`;
}

export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) return '—';
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

/** Parameter counts as model cards give them: 3 significant digits, e.g. `494M`, `3.82B`. */
export function formatParameterCount(count: number): string {
  const units: [number, string][] = [
    [1e12, 'T'],
    [1e9, 'B'],
    [1e6, 'M'],
    [1e3, 'K'],
  ];
  for (const [size, unit] of units) {
    if (count >= size) return `${Number((count / size).toPrecision(3))}${unit}`;
  }
  return String(count);
}

/**
 * A base model's facts for its entry in the model picker, e.g. `qwen2, 494M params, context
 * 32768`: what a user weighs when choosing one. Facts the API could not read are left out.
 */
export function describeBaseModel(model: {
  architecture?: string | null;
  parameters?: number | null;
  context_length?: number | null;
}): string {
  const parts: string[] = [];
  if (model.architecture) parts.push(model.architecture);
  if (typeof model.parameters === 'number') {
    parts.push(`${formatParameterCount(model.parameters)} params`);
  }
  if (typeof model.context_length === 'number') parts.push(`context ${model.context_length}`);
  return parts.join(', ');
}

/** Metric values: 4 significant digits, exponent form for very small or large numbers. */
export function formatMetric(value: unknown): string {
  if (value === null || value === undefined) return '—';
  if (typeof value === 'string') return value;
  if (typeof value !== 'number') return JSON.stringify(value);
  if (!Number.isFinite(value)) return String(value);
  if (Number.isInteger(value)) return value.toLocaleString('en-US');
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(2);
  return Number(value.toPrecision(4)).toString();
}

/**
 * Labels for a chart axis's tick values: `formatMetric`'s 4 significant digits while they
 * tell the ticks apart, else as many more digits as it takes. A loss that barely moves
 * (5.5970, 5.5972, …) would otherwise label every tick `5.597`.
 */
export function formatAxisTicks(splits: readonly number[]): string[] {
  const labels = splits.map((v) => formatMetric(v));
  if (new Set(labels).size === labels.length) return labels;
  for (let digits = 5; digits <= 15; digits++) {
    const precise = splits.map((v) =>
      Number.isFinite(v) ? Number(v.toPrecision(digits)).toString() : String(v),
    );
    if (new Set(precise).size === precise.length) return precise;
  }
  return labels;
}

export function formatPercent(percent: number | null): string {
  if (percent === null || !Number.isFinite(percent)) return '—';
  return `${Math.round(percent)}%`;
}

/**
 * The job's suffix. The job object has no `suffix` field yet, so it is read from
 * `fine_tuned_model` (`ft:<base>:<tenant>:<suffix>:<job>`), which exists once a job succeeded;
 * a `suffix` field is used as soon as the API adds one.
 */
export function jobSuffix(
  job: Pick<FineTuningJob, 'fine_tuned_model'> & { suffix?: unknown },
): string | null {
  if (typeof job.suffix === 'string' && job.suffix) return job.suffix;
  const model = job.fine_tuned_model;
  if (!model?.startsWith('ft:')) return null;
  const parts = model.split(':');
  if (parts.length < 5) return null;
  const suffix = parts[parts.length - 2];
  return suffix || null;
}

/** Progress as a 0–100 number (the API's percent, or step/total when percent is missing). */
export function progressPercent(
  progress: FineTuningJob['progress'],
  status: FineTuningJob['status'],
): number | null {
  if (status === 'succeeded') return 100;
  if (progress.percent !== null) return Math.max(0, Math.min(100, progress.percent));
  if (progress.total_steps)
    return Math.max(0, Math.min(100, (100 * progress.step) / progress.total_steps));
  return null;
}

export interface FileProblem {
  line: number | null;
  reason: string;
}

/**
 * `status_details` of a file that failed validation: a summary line, then `line N: reason`
 * lines (apps/api/src/files/files.service.ts).
 */
export function parseStatusDetails(details: string | null): {
  summary: string | null;
  problems: FileProblem[];
} {
  if (!details) return { summary: null, problems: [] };
  const lines = details
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  let summary: string | null = null;
  const problems: FileProblem[] = [];
  for (const [index, text] of lines.entries()) {
    const match = /^line (\d+):\s*(.*)$/i.exec(text);
    if (match) problems.push({ line: Number(match[1]), reason: match[2] });
    else if (index === 0 && /problem/i.test(text)) summary = text;
    else problems.push({ line: null, reason: text });
  }
  return { summary, problems };
}
