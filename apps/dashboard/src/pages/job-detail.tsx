import { AdapterCard } from '../components/job-detail/adapter-card';
import { CheckpointsCard } from '../components/job-detail/checkpoints-card';
import { EventsCard } from '../components/job-detail/events-card';
import { JobActionDialog } from '../components/job-detail/job-actions';
import { JobHeader } from '../components/job-detail/job-header';
import { JobProgressCard } from '../components/job-detail/job-progress-card';
import { JobSettingsCards } from '../components/job-detail/job-settings-cards';
import { TrainingCurvesCard } from '../components/job-detail/training-curves-card';
import { Link } from '../components/link';
import { useJobAction } from '../hooks/use-job-action';
import { MAX_HISTORY_EVENTS, useJobDetail } from '../hooks/use-job-detail';
import { useNow } from '../hooks/use-now';
import { jobPath } from '../lib/job-detail';

/** One job, kept live: progress, curves, adapter downloads, settings, checkpoints, events. */
export function JobDetailPage({ id }: { id: string }) {
  const detail = useJobDetail(id);
  const action = useJobAction(jobPath(id), detail.showJob, detail.pollNow);
  const now = useNow(1000);
  const { job, fatal } = detail;

  const header = <JobHeader id={id} job={job} showActions={!fatal} onAction={action.ask} />;
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

  return (
    <section aria-labelledby="page-title" class="job-detail" data-status={job.status}>
      {header}
      {action.error && !action.pending ? (
        <p class="alert" role="alert">
          {action.error}
        </p>
      ) : null}
      {job.error ? (
        <div class="alert" role="alert">
          <strong>Failed ({job.error.code}):</strong> {job.error.message}
        </div>
      ) : null}
      <JobProgressCard job={job} now={now} />
      <TrainingCurvesCard
        status={job.status}
        method={job.method.type}
        events={detail.events}
        checkpoints={detail.checkpoints}
        historyLimit={detail.truncatedHistory ? MAX_HISTORY_EVENTS : null}
      />
      <AdapterCard job={job} />
      <JobSettingsCards job={job} />
      <CheckpointsCard checkpoints={detail.checkpoints} now={now} />
      <EventsCard events={detail.events} />
      <JobActionDialog action={action} />
    </section>
  );
}
