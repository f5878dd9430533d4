import type { CheckpointObject } from '../../lib/api-types';
import { formatBytes, formatRelative, formatTimestamp } from '../../lib/format';
import { checkpointMetricsText } from '../../lib/job-detail';

/** The job's checkpoints, newest first; `now` (ms) ticks their ages. Null: still loading. */
export function CheckpointsCard({
  checkpoints,
  now,
}: {
  checkpoints: CheckpointObject[] | null;
  now: number;
}) {
  return (
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
                  <td title={formatTimestamp(c.created_at)}>{formatRelative(c.created_at, now)}</td>
                  <td>{checkpointMetricsText(c.metrics)}</td>
                  <td>{formatBytes(c.bytes)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}
