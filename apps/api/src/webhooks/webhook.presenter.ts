import type {
  CreatedWebhookEndpointObject,
  WebhookDeliveryObject,
  WebhookDeliveryStatus,
  WebhookEndpointObject,
  WebhookEventType,
} from '@lorafleet/contracts';
import type { WebhookDeliveryEntity, WebhookEndpointEntity } from '@lorafleet/db';

const seconds = (date: Date) => Math.floor(date.getTime() / 1000);
const secondsOrNull = (date: Date | null) => (date === null ? null : seconds(date));

/** An endpoint as every read shows it: without its secret. */
export function presentEndpoint(endpoint: WebhookEndpointEntity): WebhookEndpointObject {
  return {
    id: endpoint.id,
    object: 'webhook_endpoint',
    url: endpoint.url,
    events: endpoint.events as WebhookEventType[],
    created_at: seconds(endpoint.createdAt),
  };
}

/** The create response, the only one that carries the signing secret. */
export function presentCreatedEndpoint(
  endpoint: WebhookEndpointEntity,
): CreatedWebhookEndpointObject {
  return { ...presentEndpoint(endpoint), secret: endpoint.secret };
}

export function presentDelivery(delivery: WebhookDeliveryEntity): WebhookDeliveryObject {
  return {
    id: delivery.id,
    object: 'webhook_delivery',
    endpoint_id: delivery.endpointId,
    event_id: delivery.eventId,
    event_type: delivery.eventType as WebhookEventType,
    job_id: delivery.jobId,
    status: delivery.status as WebhookDeliveryStatus,
    attempts: delivery.attempts,
    last_status_code: delivery.lastStatusCode,
    last_error: delivery.lastError,
    last_attempt_at: secondsOrNull(delivery.lastAttemptAt),
    next_attempt_at: secondsOrNull(delivery.nextAttemptAt),
    delivered_at: secondsOrNull(delivery.deliveredAt),
    created_at: seconds(delivery.createdAt),
  };
}
