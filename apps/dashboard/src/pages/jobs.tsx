import type { FineTuningJob } from '@lorafleet/contracts';
import { useEffect, useRef, useState } from 'preact/hooks';
import { Link } from '../components/link';
import { ProgressBar } from '../components/progress-bar';
import { StatusBadge } from '../components/status-badge';
import { ApiError } from '../lib/api-client';
import type { ListPage } from '../lib/api-types';
import {
  formatEta,
  formatRelative,
  formatTimestamp,
  jobSuffix,
  progressPercent,
} from '../lib/format';
import { JOB_STATUS_ORDER, STATUS_LABELS, isTerminal } from '../lib/job-status';
import { jobUrl, jobsUrl } from '../lib/routes';
import { navigate } from '../hooks/router';
import { api } from '../hooks/session';
import { useNow } from '../hooks/use-now';
import { usePoller } from '../hooks/use-poller';

const PAGE_SIZES = [10, 20, 50, 100];
const DEFAULT_LIMIT = 20;
/** Poll fast while something on the page is moving, slowly otherwise (new jobs appear). */
const ACTIVE_POLL_MS = 2000;
const IDLE_POLL_MS = 15_000;

export function JobsPage({
  status,
  after,
  limit,
}: {
  status: string | null;
  after: string | null;
  limit: number | null;
}) {
  const pageSize = limit ?? DEFAULT_LIMIT;
  const [page, setPage] = useState<ListPage<FineTuningJob> | null>(null);
  const [error, setError] = useState<string | null>(null);
  // Cursors of the pages before this one, so "Previous" can go back (the API pages forward only).
  const [previous, setPrevious] = useState<(string | null)[]>([]);
  const now = useNow(1000);
  const query = new URLSearchParams({ limit: String(pageSize) });
  if (status) query.set('status', status);
  if (after) query.set('after', after);
  const path = `/v1/fine_tuning/jobs?${query.toString()}`;

  const etag = useRef<string | null>(null);
  const latest = useRef<ListPage<FineTuningJob> | null>(null);
  useEffect(() => {
    etag.current = null;
    latest.current = null;
    setPage(null);
    setError(null);
  }, [path]);

  const { pollNow } = usePoller(
    async (signal) => {
      const result = await api.getConditional<ListPage<FineTuningJob>>(path, etag.current, {
        signal,
      });
      etag.current = result.etag;
      if (!result.notModified) {
        latest.current = result.data;
        setPage(result.data);
        setError(null);
      }
      const moving = latest.current?.data.some((job) => !isTerminal(job.status));
      return moving ? ACTIVE_POLL_MS : IDLE_POLL_MS;
    },
    [path],
    { onFatal: (e) => setError(e instanceof ApiError ? e.message : String(e)) },
  );

  const go = (next: { status?: string | null; after?: string | null; limit?: number | null }) =>
    navigate(jobsUrl({ status, limit, ...next }));

  const jobs = page?.data ?? [];
  return (
    <section aria-labelledby="page-title">
      <div class="page-head">
        <h1 id="page-title" tabIndex={-1}>
          Fine-tuning jobs
        </h1>
        <Link href="/jobs/new" class="button button-primary">
          New job
        </Link>
      </div>
      <div class="toolbar" role="group" aria-label="Filter and paging">
        <div class="field field-inline">
          <label for="status-filter">Status</label>
          <select
            id="status-filter"
            value={status ?? ''}
            onChange={(e) => {
              setPrevious([]);
              go({ status: e.currentTarget.value || null, after: null });
            }}
          >
            <option value="">All statuses</option>
            {JOB_STATUS_ORDER.map((s) => (
              <option key={s} value={s}>
                {STATUS_LABELS[s]}
              </option>
            ))}
          </select>
        </div>
        <div class="field field-inline">
          <label for="page-size">Per page</label>
          <select
            id="page-size"
            value={String(pageSize)}
            onChange={(e) => {
              setPrevious([]);
              go({ limit: Number(e.currentTarget.value), after: null });
            }}
          >
            {PAGE_SIZES.map((n) => (
              <option key={n} value={String(n)}>
                {n}
              </option>
            ))}
          </select>
        </div>
        <button type="button" class="button" onClick={() => pollNow()}>
          Refresh
        </button>
      </div>
      {error ? (
        <p class="alert" role="alert">
          {error}
        </p>
      ) : null}
      {page === null && !error ? (
        <p class="muted" role="status">
          Loading jobs…
        </p>
      ) : null}
      {page !== null && jobs.length === 0 ? (
        <div class="empty card" role="status">
          {status ? (
            <p>
              No jobs with status “{STATUS_LABELS[status as FineTuningJob['status']] ?? status}”.
            </p>
          ) : after ? (
            <p>No more jobs.</p>
          ) : (
            <p>
              No jobs yet. <Link href="/jobs/new">Start a fine-tuning job</Link>.
            </p>
          )}
        </div>
      ) : null}
      {jobs.length > 0 ? (
        <div class="table-wrap">
          <table class="table table-cards" id="jobs-table">
            <caption class="visually-hidden">Fine-tuning jobs, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Job</th>
                <th scope="col">Status</th>
                <th scope="col">Progress</th>
                <th scope="col">ETA</th>
                <th scope="col">Model</th>
                <th scope="col">Suffix</th>
                <th scope="col">Created</th>
              </tr>
            </thead>
            <tbody>
              {jobs.map((job) => {
                const suffix = jobSuffix(job);
                const steps = job.progress.total_steps
                  ? `${job.progress.step}/${job.progress.total_steps}`
                  : undefined;
                return (
                  <tr key={job.id} data-job-id={job.id}>
                    <td data-label="Job">
                      <Link href={jobUrl(job.id)} class="mono">
                        {job.id}
                      </Link>
                    </td>
                    <td data-label="Status">
                      <StatusBadge status={job.status} />
                    </td>
                    <td data-label="Progress">
                      <ProgressBar
                        percent={progressPercent(job.progress, job.status)}
                        label={`Progress of ${job.id}`}
                        detail={steps}
                      />
                    </td>
                    <td data-label="ETA">{formatEta(job, now)}</td>
                    <td data-label="Model">
                      <span class="mono">{job.model}</span>
                    </td>
                    <td data-label="Suffix">{suffix ?? <span class="muted">—</span>}</td>
                    <td data-label="Created">
                      <time
                        dateTime={new Date(job.created_at * 1000).toISOString()}
                        title={formatTimestamp(job.created_at)}
                      >
                        {formatRelative(job.created_at, now)}
                      </time>
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      ) : null}
      <nav class="pager" aria-label="Pages">
        <button
          type="button"
          class="button"
          disabled={!after}
          onClick={() => {
            const stack = [...previous];
            const back = stack.pop() ?? null;
            setPrevious(stack);
            go({ after: back });
          }}
        >
          ← Previous
        </button>
        <button
          type="button"
          class="button"
          disabled={!page?.has_more || jobs.length === 0}
          onClick={() => {
            setPrevious([...previous, after]);
            go({ after: jobs[jobs.length - 1].id });
          }}
        >
          Next →
        </button>
      </nav>
    </section>
  );
}
