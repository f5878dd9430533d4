import { z } from 'zod';
import { listPage } from './jobs';
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

const unixSeconds = z.number().int();

/** `GET /v1/webhook_endpoints/{id}`: never carries the secret. */
export const WebhookEndpointObjectSchema = z.object({
  id: z.string().describe('`we_…`'),
  object: z.literal('webhook_endpoint'),
  url: z.string(),
  events: z.array(z.enum(WEBHOOK_EVENT_TYPES)),
  created_at: unixSeconds,
});
export type WebhookEndpointObject = z.infer<typeof WebhookEndpointObjectSchema>;

/** The create response: the only place the signing secret (`whsec_…`) is ever shown. */
export const CreatedWebhookEndpointObjectSchema = WebhookEndpointObjectSchema.extend({
  secret: z
    .string()
    .describe(
      '`whsec_` + base64 of 32 random bytes; the HMAC key (base64-decoded). Shown only in this response.',
    ),
});
export type CreatedWebhookEndpointObject = z.infer<typeof CreatedWebhookEndpointObjectSchema>;

export const WEBHOOK_DELIVERY_STATUSES = ['pending', 'delivered', 'failed'] as const;
export type WebhookDeliveryStatus = (typeof WEBHOOK_DELIVERY_STATUSES)[number];

/** One entry of an endpoint's delivery log. Times are unix seconds. */
export const WebhookDeliveryObjectSchema = z.object({
  id: z.string().describe('`whdel_…`'),
  object: z.literal('webhook_delivery'),
  endpoint_id: z.string(),
  event_id: z
    .string()
    .describe('`evt_…`, sent as `webhook-id`: the same on every attempt and every redelivery'),
  event_type: z.enum(WEBHOOK_EVENT_TYPES),
  job_id: z.string(),
  status: z
    .enum(WEBHOOK_DELIVERY_STATUSES)
    .describe('`pending` (retrying), `delivered` (a 2xx answer), `failed` (retries exhausted)'),
  attempts: z.number().int(),
  last_status_code: z.number().int().nullable().describe('HTTP status of the last answer'),
  last_error: z
    .string()
    .nullable()
    .describe(
      'Why the last attempt failed: `HTTP 500`, a network error, a timeout, a refused address',
    ),
  last_attempt_at: unixSeconds.nullable(),
  next_attempt_at: unixSeconds.nullable().describe('When the next retry is due; null once settled'),
  delivered_at: unixSeconds.nullable(),
  created_at: unixSeconds,
});
export type WebhookDeliveryObject = z.infer<typeof WebhookDeliveryObjectSchema>;

/** A page of an OpenAI-style list, with the cursors of its first and last entries. */
const cursorPage = <T extends z.ZodTypeAny>(item: T) =>
  listPage(item).extend({ first_id: z.string().nullable(), last_id: z.string().nullable() });

export const WebhookEndpointListSchema = cursorPage(WebhookEndpointObjectSchema);
export const WebhookDeliveryListSchema = cursorPage(WebhookDeliveryObjectSchema);
