import type {
  AdaptersRepository,
  AttemptsRepository,
  CheckpointsRepository,
  FilesRepository,
  JobEventsRepository,
  JobsRepository,
  WorkersRepository,
} from '@lorafleet/db';

// What the processor uses of Postgres, as narrow types: the repositories provide them in the
// worker, and the processor's unit tests an in-memory store with the same rules.

/** What the processor reads and writes of a job's attempt, over the per-aggregate repositories. */
export type AttemptJobs = Pick<JobsRepository, 'findById' | 'transition' | 'requeue'> &
  Pick<
    AttemptsRepository,
    'claimAttempt' | 'memoryRequiredMb' | 'recordBackend' | 'updateProgress'
  > &
  Pick<JobEventsRepository, 'appendFencedEvent'> &
  Pick<CheckpointsRepository, 'latestCheckpoint' | 'saveCheckpoint'> &
  Pick<AdaptersRepository, 'completeWithAdapter'>;
export type AttemptFiles = Pick<FilesRepository, 'getContent'>;
export type AttemptWorkers = Pick<
  WorkersRepository,
  'heartbeat' | 'liveWithMemoryAtLeast' | 'recordThroughput'
>;

/** The worker's `AttemptJobs`: each method from the repository of its aggregate. */
export function attemptJobs(
  jobs: JobsRepository,
  attempts: AttemptsRepository,
  events: JobEventsRepository,
  checkpoints: CheckpointsRepository,
  adapters: AdaptersRepository,
): AttemptJobs {
  return {
    findById: (...args) => jobs.findById(...args),
    transition: (...args) => jobs.transition(...args),
    requeue: (...args) => jobs.requeue(...args),
    claimAttempt: (...args) => attempts.claimAttempt(...args),
    memoryRequiredMb: (...args) => attempts.memoryRequiredMb(...args),
    recordBackend: (...args) => attempts.recordBackend(...args),
    updateProgress: (...args) => attempts.updateProgress(...args),
    appendFencedEvent: (...args) => events.appendFencedEvent(...args),
    latestCheckpoint: (...args) => checkpoints.latestCheckpoint(...args),
    saveCheckpoint: (...args) => checkpoints.saveCheckpoint(...args),
    completeWithAdapter: (...args) => adapters.completeWithAdapter(...args),
  };
}
