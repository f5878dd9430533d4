import { z } from 'zod';

/**
 * BullMQ queue names.
 *
 * WARNING: these strings are stored in Redis with every job. Renaming one strands the jobs
 * already queued under the old name: workers stop seeing them. Add a new queue and drain the
 * old one instead of renaming.
 */
export const QUEUE_NAMES = {
  fineTune: 'fine-tune',
} as const;

export type QueueName = (typeof QUEUE_NAMES)[keyof typeof QUEUE_NAMES];

/**
 * The BullMQ payload of a fine-tune job. Postgres is the record of truth, so the payload only
 * names the job; workers read everything else from the job row. `schemaVersion` lets a newer
 * worker refuse (or upgrade) payloads written by an older API.
 */
export const FineTuneJobPayloadSchema = z.object({
  schemaVersion: z.literal(1),
  jobId: z.string().min(1),
  tenantId: z.string().min(1),
});
export type FineTuneJobPayload = z.infer<typeof FineTuneJobPayloadSchema>;

/** Names of the BullMQ jobs on each queue, with their payload types. */
export interface QueueJobPayloads {
  [QUEUE_NAMES.fineTune]: FineTuneJobPayload;
}

/** A queue with a payload of that queue's type: what an outbox row stores and the relay adds. */
export type QueueDelivery = {
  [Q in QueueName]: { queue: Q; payload: QueueJobPayloads[Q] };
}[QueueName];

/**
 * The delivery of a fine-tune job: the one place its payload is written (create, resume,
 * retry, hand-back and the reconciler all enqueue through it).
 */
export function fineTuneDelivery(job: { id: string; tenantId: string }): QueueDelivery {
  return {
    queue: QUEUE_NAMES.fineTune,
    payload: { schemaVersion: 1, jobId: job.id, tenantId: job.tenantId },
  };
}
export const FINE_TUNE_JOB_NAME = 'train-lora';
