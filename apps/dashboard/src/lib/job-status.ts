import type { JobStatus } from '@lorafleet/contracts';

/**
 * Job statuses in lifecycle order. Kept here rather than imported from `@lorafleet/contracts`
 * at run time, because the contracts module pulls zod into the bundle; the `satisfies` and
 * the exhaustiveness check below keep the list in step with the contract at compile time.
 */
export const JOB_STATUS_ORDER = [
  'validating_files',
  'queued',
  'running',
  'paused',
  'succeeded',
  'failed',
  'cancelled',
] as const satisfies readonly JobStatus[];

// Fails to compile when the contract gains a status this list lacks.
type MissingStatus = Exclude<JobStatus, (typeof JOB_STATUS_ORDER)[number]>;
const _everyStatusListed: MissingStatus extends never ? true : never = true;
void _everyStatusListed;

const TERMINAL: ReadonlySet<JobStatus> = new Set<JobStatus>(['succeeded', 'failed', 'cancelled']);

export function isTerminal(status: JobStatus): boolean {
  return TERMINAL.has(status);
}

export const STATUS_LABELS: Readonly<Record<JobStatus, string>> = {
  validating_files: 'Validating files',
  queued: 'Queued',
  running: 'Running',
  paused: 'Paused',
  succeeded: 'Succeeded',
  failed: 'Failed',
  cancelled: 'Cancelled',
};

/** Which control actions the API accepts in a status (mirrors JOB_STATUS_TRANSITIONS). */
export function allowedActions(status: JobStatus): {
  cancel: boolean;
  pause: boolean;
  resume: boolean;
} {
  return {
    cancel: !isTerminal(status),
    pause: status === 'running',
    resume: status === 'paused',
  };
}
