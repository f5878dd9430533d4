import type { FineTuningJob, FineTuningJobEvent } from '@lorafleet/contracts';
import { useMemo, useRef, useState } from 'preact/hooks';
import { ConfirmDialog } from '../components/confirm-dialog';
import { KeyValues, type KeyValue } from '../components/key-values';
import { Link } from '../components/link';
import { MetricChart } from '../components/metric-chart';
import { ProgressBar } from '../components/progress-bar';
import { StatusBadge } from '../components/status-badge';
import { ApiError } from '../lib/api-client';
import type { CheckpointObject, ListPage } from '../lib/api-types';
import { saveBlob } from '../lib/download';
import { eventSeq, mergeEvents, metricSeries, newestSeq } from '../lib/events';
import {
  formatBytes,
  formatDuration,
  formatEta,
  formatMetric,
  formatRelative,
  formatTimestamp,
  jobSuffix,
  progressPercent,
} from '../lib/format';
import { allowedActions, isTerminal } from '../lib/job-status';
import { api } from '../hooks/session';
import { useNow } from '../hooks/use-now';
import { usePoller } from '../hooks/use-poller';

/** DESIGN: a job still moving refreshes every 2 s (If-None-Match makes an unchanged poll a 304). */
const MOVING_POLL_MS = 2000;
const PAUSED_POLL_MS = 5000;
const EVENTS_PAGE = 100;
/** History loaded on first view: enough for every metric of a long run, bounded for the tab. */
const MAX_EVENT_PAGES = 50;
const EVENTS_SHOWN_STEP = 100;

type Action = 'cancel' | 'pause' | 'resume';

/** What the polling loop remembers between polls (a ref: it must not trigger renders). */
interface PollState {
  etag: string | null;
  job: FineTuningJob | null;
  events: FineTuningJobEvent[];
  historyLoaded: boolean;
  /** After the job ends: one more pass for late events, then stop. */
  finalSweep: 'none' | 'pending' | 'done';
  polls: number;
}

const ACTION_TEXT: Record<
  Action,
  { title: string; body: string; confirm: string; danger: boolean }
> = {
  cancel: {
    title: 'Cancel this job?',
    body: 'Training stops within seconds and the job ends as cancelled. This cannot be undone; no adapter is kept.',
    confirm: 'Yes, cancel job',
    danger: true,
  },
  pause: {
    title: 'Pause this job?',
    body: 'The worker saves a checkpoint, stops and frees its device. Resume continues from the last checkpoint.',
    confirm: 'Yes, pause',
    danger: false,
  },
  resume: {
    title: 'Resume this job?',
    body: 'The job goes back in the queue and continues from its last checkpoint on the next free worker.',
    confirm: 'Yes, resume',
    danger: false,
  },
};

const ADAPTER_FILES = [
  { label: 'adapter_config.json', path: 'files/adapter_config.json', name: 'adapter_config.json' },
  {
    label: 'adapter_model.safetensors',
    path: 'files/adapter_model.safetensors',
    name: 'adapter_model.safetensors',
  },
  { label: 'Archive (.tar.gz)', path: 'archive', name: 'adapter.tar.gz' },
] as const;

const display = (value: unknown): string => {
  if (value === undefined || value === null) return '';
  if (Array.isArray(value)) return value.join(', ');
  if (typeof value === 'number') return formatMetric(value);
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  if (typeof value === 'object') return JSON.stringify(value);
  return typeof value === 'string' ? value : JSON.stringify(value);
};

function JobActions({
  status,
  onAction,
}: {
  status: FineTuningJob['status'];
  onAction: (action: Action) => void;
}) {
  const actions = allowedActions(status);
  return (
    <div class="actions" role="group" aria-label="Job actions">
      {actions.pause ? (
        <button type="button" class="button" onClick={() => onAction('pause')}>
          Pause
        </button>
      ) : null}
      {actions.resume ? (
        <button type="button" class="button" onClick={() => onAction('resume')}>
          Resume
        </button>
      ) : null}
      {actions.cancel ? (
        <button
          type="button"
          class="button button-danger-outline"
          onClick={() => onAction('cancel')}
        >
          Cancel job
        </button>
      ) : null}
    </div>
  );
}

export function JobDetailPage({ id }: { id: string }) {
  const [job, setJob] = useState<FineTuningJob | null>(null);
  const [events, setEvents] = useState<FineTuningJobEvent[]>([]);
  const [truncatedHistory, setTruncatedHistory] = useState(false);
  const [checkpoints, setCheckpoints] = useState<CheckpointObject[] | null>(null);
  const [fatal, setFatal] = useState<string | null>(null);
  const [pending, setPending] = useState<Action | null>(null);
  const [actionBusy, setActionBusy] = useState(false);
  const [actionError, setActionError] = useState<string | null>(null);
  const [downloading, setDownloading] = useState<string | null>(null);
  const [downloadError, setDownloadError] = useState<string | null>(null);
  const [showMetricEvents, setShowMetricEvents] = useState(false);
  const [eventsShown, setEventsShown] = useState(EVENTS_SHOWN_STEP);
  const now = useNow(1000);

  const base = `/v1/fine_tuning/jobs/${encodeURIComponent(id)}`;
  const state = useRef<PollState>({
    etag: null,
    job: null,
    events: [],
    historyLoaded: false,
    finalSweep: 'none',
    polls: 0,
  });

  const putEvents = (incoming: FineTuningJobEvent[]) => {
    const merged = mergeEvents(state.current.events, incoming);
    if (merged !== state.current.events) {
      state.current.events = merged;
      setEvents(merged);
    }
  };

  const loadHistory = async (signal: AbortSignal) => {
    let after: string | null = null;
    const collected: FineTuningJobEvent[] = [];
    for (let pageNo = 0; pageNo < MAX_EVENT_PAGES; pageNo += 1) {
      const query: string = after ? `&after=${encodeURIComponent(after)}` : '';
      const page: ListPage<FineTuningJobEvent> = await api.get(
        `${base}/events?limit=${EVENTS_PAGE}${query}`,
        { signal },
      );
      collected.push(...page.data);
      if (!page.has_more || page.data.length === 0) {
        setTruncatedHistory(false);
        putEvents(collected);
        return;
      }
      after = page.data[page.data.length - 1].id;
    }
    setTruncatedHistory(true);
    putEvents(collected);
  };

  /** Newest pages until they overlap what is already known. */
  const loadNewEvents = async (signal: AbortSignal) => {
    const known = newestSeq(state.current.events);
    let after: string | null = null;
    for (let pageNo = 0; pageNo < 10; pageNo += 1) {
      const query: string = after ? `&after=${encodeURIComponent(after)}` : '';
      const page: ListPage<FineTuningJobEvent> = await api.get(
        `${base}/events?limit=${EVENTS_PAGE}${query}`,
        { signal },
      );
      putEvents(page.data);
      const oldest = page.data[page.data.length - 1];
      if (!page.has_more || !oldest || eventSeq(oldest.id) <= known) return;
      after = oldest.id;
    }
  };

  const loadCheckpoints = async (signal: AbortSignal) => {
    const page = await api.get<ListPage<CheckpointObject>>(`${base}/checkpoints?limit=100`, {
      signal,
    });
    setCheckpoints(page.data);
  };

  const { pollNow } = usePoller(
    async (signal) => {
      const s = state.current;
      s.polls += 1;
      const result = await api.getConditional<FineTuningJob>(base, s.etag, { signal });
      s.etag = result.etag;
      const changed = !result.notModified;
      const previousStatus = s.job?.status;
      if (!result.notModified) {
        s.job = result.data;
        setJob(result.data);
      }
      const current = s.job!;
      if (!s.historyLoaded) {
        await loadHistory(signal);
        await loadCheckpoints(signal);
        s.historyLoaded = true;
        if (isTerminal(current.status)) s.finalSweep = 'done';
      } else if (changed || s.finalSweep === 'pending') {
        await loadNewEvents(signal);
        // Checkpoints change far less often than progress: on status changes and every ~10 s.
        if (previousStatus !== current.status || s.polls % 5 === 0 || s.finalSweep === 'pending') {
          await loadCheckpoints(signal);
        }
      }
      if (isTerminal(current.status)) {
        if (s.finalSweep === 'none') {
          // One more pass shortly after the end, for events written just after the final status.
          s.finalSweep = 'pending';
          return MOVING_POLL_MS;
        }
        s.finalSweep = 'done';
        return null;
      }
      s.finalSweep = 'none';
      return current.status === 'paused' ? PAUSED_POLL_MS : MOVING_POLL_MS;
    },
    [base],
    {
      onFatal: (error) =>
        setFatal(
          error instanceof ApiError && error.status === 404
            ? `No job ${id} in your organization.`
            : error instanceof Error
              ? error.message
              : String(error),
        ),
    },
  );

  const runAction = async (action: Action) => {
    setActionBusy(true);
    setActionError(null);
    try {
      const updated = await api.post<FineTuningJob>(`${base}/${action}`);
      state.current.job = updated;
      state.current.etag = null;
      state.current.finalSweep = 'none';
      setJob(updated);
      setPending(null);
      pollNow();
    } catch (error) {
      setActionError(error instanceof Error ? error.message : String(error));
      // A refusal usually means the job moved on (it finished while the tab was hidden, say):
      // show its state now rather than at the next poll.
      pollNow();
    } finally {
      setActionBusy(false);
    }
  };

  const download = async (file: (typeof ADAPTER_FILES)[number], adapterId: string) => {
    setDownloading(file.label);
    setDownloadError(null);
    try {
      const fallback = file.path === 'archive' ? `${adapterId}.tar.gz` : file.name;
      const { blob, filename } = await api.download(
        `/v1/adapters/${encodeURIComponent(adapterId)}/${file.path}`,
        fallback,
      );
      saveBlob(blob, filename);
    } catch (error) {
      setDownloadError(
        `Download failed: ${error instanceof Error ? error.message : String(error)}`,
      );
    } finally {
      setDownloading(null);
    }
  };

  const series = useMemo(
    () =>
      metricSeries(
        events,
        (checkpoints ?? []).map((c) => ({ step: c.step_number, metrics: c.metrics })),
      ),
    [events, checkpoints],
  );

  // One header for every state, so the focused heading survives the first load.
  const header = (
    <>
      <p class="breadcrumb">
        <Link href="/jobs">Jobs</Link> / <span class="mono">{id}</span>
      </p>
      <div class="page-head">
        <h1 id="page-title" tabIndex={-1}>
          <span class="visually-hidden">Job </span>
          <span class="mono">{id}</span> {job ? <StatusBadge status={job.status} /> : null}
        </h1>
        {job && !fatal ? <JobActions status={job.status} onAction={setPending} /> : null}
      </div>
    </>
  );
  if (fatal || !job) {
    return (
      <section aria-labelledby="page-title" class="job-detail">
        {header}
        {fatal ? (
          <>
            <p class="alert" role="alert">
              {fatal}
            </p>
            <p>
              <Link href="/jobs">Back to jobs</Link>
            </p>
          </>
        ) : (
          <p class="muted" role="status">
            Loading…
          </p>
        )}
      </section>
    );
  }

  const hasAccuracy =
    series.counts.train_mean_token_accuracy + series.counts.valid_mean_token_accuracy > 0;
  const percent = progressPercent(job.progress, job.status);
  const stepText = job.progress.total_steps
    ? `step ${job.progress.step} of ${job.progress.total_steps}`
    : job.progress.step
      ? `step ${job.progress.step}`
      : undefined;
  const shownEvents = events.filter((e) => showMetricEvents || e.type !== 'metrics');
  const metricEventCount = events.length - events.filter((e) => e.type !== 'metrics').length;
  const finishedIn = job.finished_at ? formatDuration(job.finished_at - job.created_at) : null;
  const lr = job.training.learning_rate;

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
  const hyper: KeyValue[] = [
    ['Epochs', display(job.hyperparameters.n_epochs)],
    ['Batch size', display(job.hyperparameters.batch_size)],
    ['Learning rate multiplier', display(job.hyperparameters.learning_rate_multiplier)],
    ['Learning rate', lr === undefined ? 'multiplier × base rate' : display(lr)],
    ['Max steps', display(job.training.max_steps)],
    ['Max sequence length', display(job.training.max_seq_length)],
    ['LR scheduler', display(job.training.lr_scheduler)],
    ['Warmup steps', display(job.training.warmup_steps)],
    ['Weight decay', display(job.training.weight_decay)],
    ['Gradient accumulation', display(job.training.gradient_accumulation_steps)],
    ['Gradient checkpointing', job.training.gradient_checkpointing ? 'on' : 'off'],
    ['Eval every', job.training.eval_every_steps ? `${job.training.eval_every_steps} steps` : null],
    ['Seed', String(job.seed)],
  ];
  const lora: KeyValue[] = [
    ['Rank (r)', display(job.lora.r)],
    ['Alpha', display(job.lora.alpha)],
    [
      'Scaling',
      formatMetric(
        job.lora.use_rslora ? job.lora.alpha / Math.sqrt(job.lora.r) : job.lora.alpha / job.lora.r,
      ),
    ],
    ['Dropout', display(job.lora.dropout)],
    [
      'Target modules',
      job.lora.target_modules === undefined
        ? 'architecture default'
        : display(job.lora.target_modules),
    ],
    ['rsLoRA', display(job.lora.use_rslora)],
  ];
  const files: KeyValue[] = [
    ['Training file', <span class="mono">{job.training_file}</span>],
    [
      'Validation file',
      job.validation_file ? <span class="mono">{job.validation_file}</span> : null,
    ],
    ['Metadata', job.metadata && Object.keys(job.metadata).length ? display(job.metadata) : null],
  ];

  return (
    <section aria-labelledby="page-title" class="job-detail" data-status={job.status}>
      {header}
      {actionError && !pending ? (
        <p class="alert" role="alert">
          {actionError}
        </p>
      ) : null}
      {job.error ? (
        <div class="alert" role="alert">
          <strong>Failed ({job.error.code}):</strong> {job.error.message}
        </div>
      ) : null}

      <div class="card">
        <h2>Progress</h2>
        <ProgressBar percent={percent} label="Training progress" detail={stepText} />
        <KeyValues items={summary} id="job-summary" />
      </div>

      <div class="card">
        <h2>Training curves</h2>
        <div class="charts">
          <MetricChart
            id="loss-chart"
            title="Loss"
            yLabel="loss"
            steps={series.steps}
            series={[
              { label: 'train loss', values: series.values.train_loss, color: '#1d4ed8' },
              {
                label: 'valid loss',
                values: series.values.valid_loss,
                color: '#c2410c',
                dash: [6, 4],
              },
            ]}
            emptyText={
              isTerminal(job.status)
                ? 'No training metrics were recorded.'
                : 'Waiting for the first training step…'
            }
          />
          {hasAccuracy ? (
            <MetricChart
              id="accuracy-chart"
              title="Token accuracy"
              yLabel="accuracy"
              yRange={[0, 1]}
              steps={series.steps}
              series={[
                {
                  label: 'train accuracy',
                  values: series.values.train_mean_token_accuracy,
                  color: '#047857',
                },
                {
                  label: 'valid accuracy',
                  values: series.values.valid_mean_token_accuracy,
                  color: '#7c3aed',
                  dash: [6, 4],
                },
              ]}
              emptyText="No accuracy reported yet."
            />
          ) : (
            <p class="muted chart-note">Token accuracy appears here once the worker reports it.</p>
          )}
        </div>
        {truncatedHistory ? (
          <p class="muted">Only the latest {MAX_EVENT_PAGES * EVENTS_PAGE} events are loaded.</p>
        ) : null}
      </div>

      <div class="card">
        <h2>Adapter</h2>
        {job.adapter_id ? (
          <>
            <p>
              Adapter <span class="mono">{job.adapter_id}</span> in Hugging Face PEFT format.
            </p>
            <div class="downloads" role="group" aria-label="Download adapter files">
              {ADAPTER_FILES.map((file) => (
                <button
                  key={file.label}
                  type="button"
                  class="button"
                  disabled={downloading !== null}
                  onClick={() => void download(file, job.adapter_id!)}
                >
                  {downloading === file.label ? 'Downloading…' : `Download ${file.label}`}
                </button>
              ))}
            </div>
            {downloadError ? (
              <p class="alert" role="alert">
                {downloadError}
              </p>
            ) : null}
          </>
        ) : (
          <p class="muted">
            {job.status === 'succeeded'
              ? 'This job has no adapter.'
              : 'Downloads appear here when the job succeeds.'}
          </p>
        )}
      </div>

      <div class="grid-2">
        <div class="card">
          <h2>Hyperparameters</h2>
          <KeyValues items={hyper} id="job-hyperparameters" />
        </div>
        <div class="card">
          <h2>LoRA</h2>
          <KeyValues items={lora} id="job-lora" />
          <h3>Data</h3>
          <KeyValues items={files} />
        </div>
      </div>

      <div class="card">
        <h2>Checkpoints</h2>
        {checkpoints === null ? (
          <p class="muted">Loading…</p>
        ) : checkpoints.length === 0 ? (
          <p class="muted">No checkpoints yet.</p>
        ) : (
          <div class="table-wrap">
            <table class="table" id="checkpoints-table">
              <caption class="visually-hidden">Checkpoints, newest first</caption>
              <thead>
                <tr>
                  <th scope="col">Step</th>
                  <th scope="col">Saved</th>
                  <th scope="col">Metrics</th>
                  <th scope="col">Size</th>
                </tr>
              </thead>
              <tbody>
                {checkpoints.map((c) => (
                  <tr key={c.id}>
                    <td>{c.step_number}</td>
                    <td title={formatTimestamp(c.created_at)}>
                      {formatRelative(c.created_at, now)}
                    </td>
                    <td>
                      {Object.entries(c.metrics).length
                        ? Object.entries(c.metrics)
                            .map(([k, v]) => `${k} ${formatMetric(v)}`)
                            .join(' · ')
                        : '—'}
                    </td>
                    <td>{formatBytes(c.bytes)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </div>

      <div class="card">
        <div class="card-head">
          <h2>Events</h2>
          <label class="checkbox">
            <input
              type="checkbox"
              checked={showMetricEvents}
              onChange={(e) => setShowMetricEvents(e.currentTarget.checked)}
            />
            Show metrics events ({metricEventCount})
          </label>
        </div>
        {shownEvents.length === 0 ? (
          <p class="muted">No events yet.</p>
        ) : (
          <ol class="events" id="events-log" aria-label="Events, newest first">
            {shownEvents.slice(0, eventsShown).map((event) => (
              <li key={event.id} class={`event event-${event.level}`} data-type={event.type}>
                <time dateTime={new Date(event.created_at * 1000).toISOString()}>
                  {formatTimestamp(event.created_at)}
                </time>
                <span class={`level level-${event.level}`}>{event.level}</span>
                <span class="event-message">{event.message}</span>
              </li>
            ))}
          </ol>
        )}
        {shownEvents.length > eventsShown ? (
          <button
            type="button"
            class="button"
            onClick={() => setEventsShown(eventsShown + EVENTS_SHOWN_STEP)}
          >
            Show older events
          </button>
        ) : null}
      </div>

      <ConfirmDialog
        open={pending !== null}
        title={pending ? ACTION_TEXT[pending].title : ''}
        confirmLabel={pending ? ACTION_TEXT[pending].confirm : ''}
        danger={pending ? ACTION_TEXT[pending].danger : false}
        busy={actionBusy}
        onConfirm={() => pending && void runAction(pending)}
        onCancel={() => {
          setPending(null);
          setActionError(null);
        }}
      >
        <p>{pending ? ACTION_TEXT[pending].body : ''}</p>
        {actionError && pending ? (
          <p class="field-error" role="alert">
            {actionError}
          </p>
        ) : null}
      </ConfirmDialog>
    </section>
  );
}
