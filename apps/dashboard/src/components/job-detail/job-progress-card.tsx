import type { FineTuningJob } from '@lorafleet/contracts';
import {
  formatDuration,
  formatEta,
  formatMetric,
  formatRelative,
  formatTimestamp,
  jobSuffix,
  progressPercent,
} from '../../lib/format';
import { progressStepText } from '../../lib/job-detail';
import { KeyValues, type KeyValue } from '../key-values';
import { ProgressBar } from '../progress-bar';
import { StatusBadge } from '../status-badge';

/** The progress bar and the run's summary; `now` (ms) ticks the ETA and the ages. */
export function JobProgressCard({ job, now }: { job: FineTuningJob; now: number }) {
  const finishedIn = job.finished_at ? formatDuration(job.finished_at - job.created_at) : null;
  const summary: KeyValue[] = [
    ['Status', <StatusBadge status={job.status} />],
    ['Model', <span class="mono">{job.model}</span>],
    ['Suffix', jobSuffix(job)],
    [
      'Fine-tuned model',
      job.fine_tuned_model ? <code class="wrap">{job.fine_tuned_model}</code> : null,
    ],
    ['Epoch', job.progress.epoch === null ? null : formatMetric(job.progress.epoch)],
    ['ETA', formatEta(job, now)],
    ['Created', `${formatTimestamp(job.created_at)} (${formatRelative(job.created_at, now)})`],
    [
      'Finished',
      job.finished_at ? `${formatTimestamp(job.finished_at)} (took ${finishedIn})` : null,
    ],
    [
      'Trained tokens',
      job.trained_tokens === null ? null : job.trained_tokens.toLocaleString('en-US'),
    ],
    ['Worker', job.worker ? <span class="mono">{job.worker}</span> : null],
    ['Backend', job.backend],
    // What the successful attempt used (null until the job succeeds).
    [
      'Peak memory',
      job.usage?.peak_memory_mb == null
        ? null
        : `${job.usage.peak_memory_mb.toLocaleString('en-US')} MiB`,
    ],
    [
      'Throughput',
      job.usage?.tokens_per_second == null
        ? null
        : `${Math.round(job.usage.tokens_per_second).toLocaleString('en-US')} tokens/s`,
    ],
  ];
  return (
    <div class="card">
      <h2>Progress</h2>
      <ProgressBar
        percent={progressPercent(job.progress, job.status)}
        label="Training progress"
        detail={progressStepText(job.progress)}
      />
      <KeyValues items={summary} id="job-summary" />
    </div>
  );
}
