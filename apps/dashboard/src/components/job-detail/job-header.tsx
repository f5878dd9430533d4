import type { FineTuningJob } from '@lorafleet/contracts';
import type { JobAction } from '../../hooks/use-job-action';
import { playgroundUrl } from '../../lib/playground-url';
import { Link } from '../link';
import { StatusBadge } from '../status-badge';
import { JobActions } from './job-actions';

/**
 * Breadcrumb, title and actions. The page renders this one header in every state, so the
 * focused heading survives the first load.
 */
export function JobHeader({
  id,
  job,
  showActions,
  onAction,
}: {
  id: string;
  job: FineTuningJob | null;
  showActions: boolean;
  onAction: (action: JobAction) => void;
}) {
  return (
    <>
      <p class="breadcrumb">
        <Link href="/jobs">Jobs</Link> / <span class="mono">{id}</span>
      </p>
      <div class="page-head">
        <h1 id="page-title" tabIndex={-1}>
          <span class="visually-hidden">Job </span>
          <span class="mono">{id}</span> {job ? <StatusBadge status={job.status} /> : null}
        </h1>
        {job && showActions ? <JobActions status={job.status} onAction={onAction} /> : null}
        {job?.status === 'succeeded' && job.fine_tuned_model ? (
          // The base and this job's adapter, preselected side by side.
          <Link
            href={playgroundUrl({ base: job.model, adapters: [job.fine_tuned_model] })}
            class="button button-primary"
            id="try-it"
          >
            Try it in the playground
          </Link>
        ) : null}
      </div>
    </>
  );
}
