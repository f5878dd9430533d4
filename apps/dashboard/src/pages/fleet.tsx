import { useRef, useState } from 'preact/hooks';
import { Link } from '../components/link';
import { ApiError } from '../lib/api-client';
import type { WorkersPage } from '../lib/api-types';
import { formatDuration, formatTimestamp } from '../lib/format';
import { jobUrl } from '../lib/routes';
import { api } from '../hooks/session';
import { useNow } from '../hooks/use-now';
import { usePoller } from '../hooks/use-poller';

const FLEET_POLL_MS = 5000;
/** A heartbeat older than this is shown as stale (workers beat every 5 s by default). */
const STALE_AFTER_S = 30;
const QUEUE_STATES = [
  'waiting',
  'prioritized',
  'delayed',
  'active',
  'completed',
  'failed',
] as const;

export function FleetPage() {
  const [fleet, setFleet] = useState<WorkersPage | null>(null);
  const [fetchedAt, setFetchedAt] = useState(0);
  const [forbidden, setForbidden] = useState<string | null>(null);
  const [fatal, setFatal] = useState<string | null>(null);
  const now = useNow(1000);
  const snapshot = useRef<WorkersPage | null>(null);

  usePoller(
    async (signal) => {
      const page = await api.get<WorkersPage>('/v1/workers', { signal });
      snapshot.current = page;
      setFleet(page);
      setFetchedAt(Date.now());
      return FLEET_POLL_MS;
    },
    [],
    {
      onFatal: (error) => {
        if (error instanceof ApiError && error.status === 403) setForbidden(error.message);
        else setFatal(error instanceof Error ? error.message : String(error));
      },
    },
  );

  const head = (
    <div class="page-head">
      <h1 id="page-title" tabIndex={-1}>
        Fleet
      </h1>
      {forbidden ? null : (
        <a class="button" href="/admin/queues" target="_blank" rel="noopener">
          Queue admin (/admin/queues) <span class="visually-hidden">(opens in a new tab)</span>
        </a>
      )}
    </div>
  );

  if (forbidden) {
    return (
      <section aria-labelledby="page-title">
        {head}
        <div class="notice card" role="alert" id="fleet-forbidden">
          <h2>Admin key needed</h2>
          <p>
            The fleet view lists every worker and queue across all organizations, so it needs an{' '}
            <strong>admin</strong> API key. The key you signed in with is a regular tenant key (the
            API answered: “{forbidden}”).
          </p>
          <p>
            Sign out and sign in with an admin key (
            <code>lorafleet admin db create-tenant &lt;name&gt; --admin</code>) to see it. Your jobs
            are under <Link href="/jobs">Jobs</Link>.
          </p>
        </div>
      </section>
    );
  }

  const ageOf = (w: WorkersPage['data'][number]) =>
    w.heartbeat_age_seconds + Math.max(0, (now - fetchedAt) / 1000);
  return (
    <section aria-labelledby="page-title">
      {head}
      {fatal ? (
        <p class="alert" role="alert">
          {fatal}
        </p>
      ) : null}
      {fleet === null && !fatal ? (
        <p class="muted" role="status">
          Loading fleet…
        </p>
      ) : null}
      {fleet ? (
        <>
          <div class="card">
            <h2>Queue</h2>
            {fleet.queue ? (
              <ul class="stats" id="queue-depth" aria-label="Queue depth per state">
                {[...new Set([...QUEUE_STATES, ...Object.keys(fleet.queue)])].map((state) => (
                  <li key={state} class="stat" data-state={state}>
                    <span class="stat-value">{fleet.queue![state] ?? 0}</span>
                    <span class="stat-label">{state}</span>
                  </li>
                ))}
              </ul>
            ) : (
              <p class="alert">
                Queue depth unavailable: Redis did not answer. Workers below come from Postgres.
              </p>
            )}
            <p class="hint">
              Per-job queue details, retries and logs are in the{' '}
              <a href="/admin/queues">queue admin</a> (HTTP Basic: any user name, an admin API key
              as the password).
            </p>
          </div>
          <div class="card">
            <h2>Workers ({fleet.data.length})</h2>
            {fleet.data.length === 0 ? (
              <p class="muted">
                No worker has registered yet. Start one with <code>npm run start:worker</code>.
              </p>
            ) : (
              <div class="table-wrap">
                <table class="table table-cards" id="workers-table">
                  <caption class="visually-hidden">Workers</caption>
                  <thead>
                    <tr>
                      <th scope="col">Worker</th>
                      <th scope="col">Status</th>
                      <th scope="col">Backend</th>
                      <th scope="col">Device</th>
                      <th scope="col">Current job</th>
                      <th scope="col">Heartbeat</th>
                      <th scope="col">Up</th>
                    </tr>
                  </thead>
                  <tbody>
                    {fleet.data.map((w) => {
                      const age = ageOf(w);
                      const stale = age > STALE_AFTER_S;
                      return (
                        <tr key={w.id} data-worker-id={w.id}>
                          <td data-label="Worker">
                            <span class="mono">{w.id}</span>
                            <br />
                            <span class="muted">
                              {w.host}
                              {w.pid ? ` · pid ${w.pid}` : ''}
                            </span>
                          </td>
                          <td data-label="Status">
                            <span class={`badge badge-worker-${stale ? 'stale' : w.status}`}>
                              {stale ? `${w.status} (stale)` : w.status}
                            </span>
                          </td>
                          <td data-label="Backend">{w.backend ?? '—'}</td>
                          <td data-label="Device">
                            {w.device ?? '—'}
                            {w.memory_limit_mb == null ? null : (
                              <>
                                <br />
                                <span class="muted">
                                  {w.memory_limit_mb.toLocaleString('en-US')} MiB limit
                                </span>
                              </>
                            )}
                          </td>
                          <td data-label="Current job">
                            {w.current_job ? (
                              <Link href={jobUrl(w.current_job)} class="mono">
                                {w.current_job}
                              </Link>
                            ) : (
                              <span class="muted">idle</span>
                            )}
                          </td>
                          <td data-label="Heartbeat" title={formatTimestamp(w.last_heartbeat_at)}>
                            {formatDuration(age)} ago
                          </td>
                          <td data-label="Up" title={formatTimestamp(w.started_at)}>
                            {formatDuration(now / 1000 - w.started_at)}
                          </td>
                        </tr>
                      );
                    })}
                  </tbody>
                </table>
              </div>
            )}
          </div>
        </>
      ) : null}
    </section>
  );
}
