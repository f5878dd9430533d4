import type { FilesRepository, JobsRepository, WorkersRepository } from '@lorafleet/db';

// What the processor uses of Postgres, as narrow types: the repositories provide them in the
// worker, and the processor's unit tests an in-memory store with the same rules.

/** What the processor reads and writes of jobs; `JobsRepository` provides it. */
export type AttemptJobs = Pick<
  JobsRepository,
  | 'claimAttempt'
  | 'memoryRequiredMb'
  | 'findById'
  | 'latestCheckpoint'
  | 'recordBackend'
  | 'appendFencedEvent'
  | 'updateProgress'
  | 'saveCheckpoint'
  | 'completeWithAdapter'
  | 'transition'
  | 'requeue'
>;
export type AttemptFiles = Pick<FilesRepository, 'getContent'>;
export type AttemptWorkers = Pick<WorkersRepository, 'heartbeat' | 'liveWithMemoryAtLeast'>;
