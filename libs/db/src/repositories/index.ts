// The repositories are the only code that talks to Postgres. One way per kind of query:
// - Hot reads, run on every request or poll (the key check, GET job, the job list, the events
//   page): `preparedQuery`, a named prepared statement on the pg pool with explicit columns,
//   rows mapped by hand instead of TypeORM's hydration (issue 5's figures depend on it).
// - Every other read or write that TypeORM's Repository / EntityManager API can state (by key,
//   equality and `In` filters, order, limit, `() => 'now()'` values): that API, never the
//   query builder.
// - What that API cannot state (row locks, UPDATE … RETURNING, INSERT … SELECT, subqueries,
//   window functions, interval arithmetic) and inserts of nested JSON, which TypeORM's types
//   reject: parameterised SQL through `manager.query` inside the caller's transaction, or
//   `dataSource.query`.
//
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
export {
  WorkersRepository,
  type BackendThroughput,
  type FleetBackend,
  type ThroughputSample,
  type WorkerRegistration,
} from './workers.repository';
export { ServingAdaptersRepository, type ServingAdapterRow } from './serving-adapters.repository';
export {
  WebhooksRepository,
  type DueWebhookDelivery,
  type WebhookAttemptFailure,
  type WebhookPage,
} from './webhooks.repository';
