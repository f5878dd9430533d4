import { formatPercent } from '../lib/format';

/** A labelled progressbar; `percent` null renders an indeterminate bar. */
export function ProgressBar({
  percent,
  label,
  detail,
}: {
  percent: number | null;
  label: string;
  detail?: string;
}) {
  const value = percent === null ? null : Math.round(percent * 10) / 10;
  return (
    <div class="progress">
      <div
        class="progress-track"
        role="progressbar"
        aria-label={label}
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={value ?? undefined}
        aria-valuetext={
          value === null ? 'Not started' : `${formatPercent(value)}${detail ? `, ${detail}` : ''}`
        }
        data-percent={value ?? ''}
      >
        <div class="progress-fill" style={{ width: `${value ?? 0}%` }} />
      </div>
      <span class="progress-text">
        {formatPercent(value)}
        {detail ? <span class="muted"> · {detail}</span> : null}
      </span>
    </div>
  );
}
