// Named exports: the transaction helpers the repositories share (event and outbox inserts,
// the lease lock, row mapping) stay inside libs/db.
export { AdaptersRepository, type JobUsageRecord, type NewAdapter } from './adapters.repository';
export {
  ApiKeysRepository,
  type AuthenticatedPrincipal,
  type IssuedApiKey,
} from './api-keys.repository';
export {
  AttemptsRepository,
  type ClaimedAttempt,
  type JobProgressUpdate,
} from './attempts.repository';
export { CheckpointsRepository, type NewCheckpoint } from './checkpoints.repository';
export { FilesRepository, type NewFile } from './files.repository';
export { JobEventsRepository, type NewJobEvent } from './job-events.repository';
export {
  ActiveJobQuotaError,
  JobsRepository,
  type JobListQuery,
  type NewJob,
  type RequeueRequest,
  type TransitionRequest,
} from './jobs.repository';
export { OutboxRepository, type NewOutboxEntry } from './outbox.repository';
export { TenantsRepository } from './tenants.repository';
export { WorkersRepository, type WorkerRegistration } from './workers.repository';
