import { Inject, Injectable } from '@nestjs/common';
import {
  CreateWebhookEndpointRequestSchema,
  WEBHOOK_EVENT_TYPES,
  type ApiEnv,
  type CreatedWebhookEndpointObject,
  type WebhookDeliveryObject,
  type WebhookEndpointObject,
} from '@lorafleet/contracts';
import { WebhooksRepository } from '@lorafleet/db';
import { API_ENV } from '../config/api-env.token';
import { ApiError } from '../errors/api-error';
import { WebhookTargetRefusedError, resolveWebhookHost } from './webhook-address';
import { WebhookDispatcherService } from './webhook-dispatcher.service';
import { presentCreatedEndpoint, presentDelivery, presentEndpoint } from './webhook.presenter';

/** Ids the webhook routes accept: anything else cannot exist, so it is a 404 without a query. */
const ENDPOINT_ID = /^we_[0-9A-Za-z]{1,64}$/;
const DELIVERY_ID = /^whdel_[0-9A-Za-z]{1,64}$/;

export interface ListPage<T> {
  object: 'list';
  data: T[];
  has_more: boolean;
  first_id: string | null;
  last_id: string | null;
}

function listPage<T extends { id: string }>(data: T[], hasMore: boolean): ListPage<T> {
  return {
    object: 'list',
    data,
    has_more: hasMore,
    first_id: data[0]?.id ?? null,
    last_id: data.at(-1)?.id ?? null,
  };
}

/** `/v1/webhook_endpoints` (issue 20): a tenant's endpoints and their delivery logs. */
@Injectable()
export class WebhooksService {
  constructor(
    private readonly webhooks: WebhooksRepository,
    private readonly dispatcher: WebhookDispatcherService,
    @Inject(API_ENV) private readonly env: ApiEnv,
  ) {}

  async create(tenantId: string, body: unknown): Promise<CreatedWebhookEndpointObject> {
    const parsed = CreateWebhookEndpointRequestSchema.safeParse(body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      // `events.2` is reported as `events`: the param a client can fix.
      const param = issue.path.length ? String(issue.path[0]) : null;
      const message =
        param === 'events' && issue.code === 'invalid_value'
          ? `events: ${JSON.stringify(eventAt(body, issue.path[1]))} is not an event type; expected one of ${WEBHOOK_EVENT_TYPES.join(', ')}`
          : `${param ?? 'body'}: ${issue.message}`;
      throw new ApiError('invalid_request', message, param);
    }
    const url = new URL(parsed.data.url);
    try {
      await resolveWebhookHost(url.hostname, this.env.LORAFLEET_WEBHOOK_ALLOW_PRIVATE === '1');
    } catch (error) {
      if (error instanceof WebhookTargetRefusedError) {
        throw new ApiError('invalid_request', `url: ${error.message}`, 'url');
      }
      throw error;
    }
    const endpoint = await this.webhooks.createEndpoint(
      tenantId,
      url.toString(),
      parsed.data.events,
    );
    return presentCreatedEndpoint(endpoint);
  }

  async list(
    tenantId: string,
    after: string | undefined,
    limitText: string | undefined,
  ): Promise<ListPage<WebhookEndpointObject>> {
    const page = await this.webhooks.listEndpoints(tenantId, after, parseLimit(limitText));
    return listPage(page.rows.map(presentEndpoint), page.hasMore);
  }

  async retrieve(tenantId: string, id: string): Promise<WebhookEndpointObject> {
    return presentEndpoint(await this.endpoint(tenantId, id));
  }

  async delete(tenantId: string, id: string) {
    if (!ENDPOINT_ID.test(id) || !(await this.webhooks.deleteEndpoint(tenantId, id))) {
      throw notFound(id);
    }
    return { id, object: 'webhook_endpoint.deleted' as const, deleted: true };
  }

  async deliveries(
    tenantId: string,
    endpointId: string,
    after: string | undefined,
    limitText: string | undefined,
  ): Promise<ListPage<WebhookDeliveryObject>> {
    const limit = parseLimit(limitText);
    await this.endpoint(tenantId, endpointId);
    const page = await this.webhooks.listDeliveries(tenantId, endpointId, after, limit);
    return listPage(page.rows.map(presentDelivery), page.hasMore);
  }

  async delivery(
    tenantId: string,
    endpointId: string,
    deliveryId: string,
  ): Promise<WebhookDeliveryObject> {
    const delivery = DELIVERY_ID.test(deliveryId)
      ? await this.webhooks.findDelivery(tenantId, endpointId, deliveryId)
      : null;
    if (delivery === null) throw deliveryNotFound(deliveryId);
    return presentDelivery(delivery);
  }

  /** Sends a finished delivery's event again, as a new delivery due now (same `webhook-id`). */
  async redeliver(
    tenantId: string,
    endpointId: string,
    deliveryId: string,
  ): Promise<WebhookDeliveryObject> {
    const copy = DELIVERY_ID.test(deliveryId)
      ? await this.webhooks.redeliver(tenantId, endpointId, deliveryId)
      : null;
    if (copy === null) throw deliveryNotFound(deliveryId);
    if (copy === 'pending') {
      throw new ApiError(
        'invalid_state',
        `Delivery ${deliveryId} is still pending: it is retried on its own; redeliver it once it is delivered or failed`,
        'delivery_id',
      );
    }
    this.dispatcher.kick();
    return presentDelivery(copy);
  }

  private async endpoint(tenantId: string, id: string) {
    const endpoint = ENDPOINT_ID.test(id) ? await this.webhooks.findEndpoint(tenantId, id) : null;
    if (endpoint === null) throw notFound(id);
    return endpoint;
  }
}

function notFound(id: string): ApiError {
  return new ApiError('not_found', `No webhook endpoint found with id ${id}`, 'id');
}

function deliveryNotFound(id: string): ApiError {
  return new ApiError('not_found', `No webhook delivery found with id ${id}`, 'delivery_id');
}

/** The rejected entry of the request's `events`, to quote it in the error. */
function eventAt(body: unknown, index: PropertyKey | undefined): unknown {
  const events = (body as { events?: unknown } | null)?.events;
  return Array.isArray(events) && typeof index === 'number' ? events[index] : undefined;
}

function parseLimit(text: string | undefined): number {
  if (text === undefined) return 20;
  // Digits only: Number() would also take "1e2", "0x10" and " 10".
  const limit = /^\d{1,3}$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(limit) || limit < 1 || limit > 100) {
    throw new ApiError('invalid_request', 'limit must be an integer from 1 to 100', 'limit');
  }
  return limit;
}
