import type { JobStatus } from '@lorafleet/contracts';
import { STATUS_LABELS } from '../lib/job-status';

export function StatusBadge({ status }: { status: JobStatus }) {
  return (
    <span class={`badge badge-${status}`} data-status={status}>
      {STATUS_LABELS[status] ?? status}
    </span>
  );
}
