import { z } from 'zod';
import type { JobStatus } from './job-status';

/**
 * Webhook event types (issue 20), one per terminal job status. Stored in Postgres
 * (`webhook_endpoints.events`, `webhook_deliveries.event_type`): renaming one strands the
 * subscriptions and deliveries already stored.
 */
export const WEBHOOK_EVENT_TYPES = [
  'fine_tuning.job.succeeded',
  'fine_tuning.job.failed',
  'fine_tuning.job.cancelled',
] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

/** The event a job's move into a terminal status emits; null for every other status. */
export function webhookEventForStatus(status: JobStatus): WebhookEventType | null {
  switch (status) {
    case 'succeeded':
      return 'fine_tuning.job.succeeded';
    case 'failed':
      return 'fine_tuning.job.failed';
    case 'cancelled':
      return 'fine_tuning.job.cancelled';
    case 'validating_files':
    case 'queued':
    case 'running':
    case 'paused':
      return null;
  }
}

/** The JSON body of every delivery: OpenAI's webhook event shape. */
export interface WebhookEventBody {
  id: string;
  object: 'event';
  type: WebhookEventType;
  /** Unix seconds. */
  created_at: number;
  data: { id: string };
}

/**
 * Body of `POST /v1/webhook_endpoints`. The URL's scheme is checked here; whether its host
 * resolves to a public address is checked by the API (SSRF guard), which needs DNS.
 */
export const CreateWebhookEndpointRequestSchema = z
  .object({
    url: z
      .string()
      .max(2048)
      .refine((value) => {
        try {
          const url = new URL(value);
          return (url.protocol === 'https:' || url.protocol === 'http:') && url.hostname !== '';
        } catch {
          return false;
        }
      }, 'url must be an absolute http or https URL'),
    events: z
      .array(z.enum(WEBHOOK_EVENT_TYPES))
      .min(1, 'events must name at least one event type')
      .refine((events) => new Set(events).size === events.length, 'events must not repeat'),
  })
  .strict();
export type CreateWebhookEndpointRequest = z.infer<typeof CreateWebhookEndpointRequestSchema>;

/** `GET /v1/webhook_endpoints/{id}`: never carries the secret. */
export interface WebhookEndpointObject {
  id: string;
  object: 'webhook_endpoint';
  url: string;
  events: WebhookEventType[];
  /** Unix seconds. */
  created_at: number;
}

/** The create response: the only place the signing secret (`whsec_…`) is ever shown. */
export interface CreatedWebhookEndpointObject extends WebhookEndpointObject {
  secret: string;
}

export const WEBHOOK_DELIVERY_STATUSES = ['pending', 'delivered', 'failed'] as const;
export type WebhookDeliveryStatus = (typeof WEBHOOK_DELIVERY_STATUSES)[number];

/** One entry of an endpoint's delivery log. Times are unix seconds. */
export interface WebhookDeliveryObject {
  id: string;
  object: 'webhook_delivery';
  endpoint_id: string;
  /** The event id, also sent as `webhook-id`: the same on every attempt and redelivery. */
  event_id: string;
  event_type: WebhookEventType;
  job_id: string;
  status: WebhookDeliveryStatus;
  attempts: number;
  last_status_code: number | null;
  last_error: string | null;
  last_attempt_at: number | null;
  next_attempt_at: number | null;
  delivered_at: number | null;
  created_at: number;
}
