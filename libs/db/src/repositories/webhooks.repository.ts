import {
  webhookEventForStatus,
  type JobStatus,
  type WebhookEventBody,
  type WebhookEventType,
} from '@lorafleet/contracts';
import { randomBytes } from 'node:crypto';
import type { DataSource, EntityManager } from 'typeorm';
import { WebhookDeliveryEntity, WebhookEndpointEntity } from '../entities';
import { newUnderscoreId } from '../ids';
import { returningRows } from './job-rows';

/**
 * The webhook outbox write (issue 20): inside the caller's transaction, the one that moves
 * `jobId` into `status`, one delivery row per endpoint of the job's tenant subscribed to the
 * status's event. The event exists exactly when the status change commits, so a crash
 * before the dispatcher sends loses nothing. Returns the event id, or null when the status
 * emits no event or no endpoint subscribes.
 */
export async function insertJobWebhookEvent(
  manager: EntityManager,
  jobId: string,
  status: JobStatus,
): Promise<string | null> {
  const type = webhookEventForStatus(status);
  if (type === null) return null;
  const eventId = newUnderscoreId('evt');
  const body: WebhookEventBody = {
    id: eventId,
    object: 'event',
    type,
    created_at: Math.floor(Date.now() / 1000),
    data: { id: jobId },
  };
  // INSERT … SELECT: the fan-out happens in the same statement as the subscription lookup,
  // so an endpoint created or deleted concurrently is either wholly in or wholly out.
  const result = await manager.query<unknown>(
    `INSERT INTO webhook_deliveries (id, endpoint_id, tenant_id, event_id, event_type, job_id, body)
     SELECT 'whdel_' || replace(gen_random_uuid()::text, '-', ''), e.id, e.tenant_id, $2, $3, j.id, $4
       FROM fine_tuning_jobs j
       JOIN webhook_endpoints e ON e.tenant_id = j.tenant_id
      WHERE j.id = $1 AND $3 = ANY(e.events)
     RETURNING id`,
    [jobId, eventId, type, JSON.stringify(body)],
  );
  return returningRows<{ id: string }>(result).length > 0 ? eventId : null;
}

/** A claimed delivery with what the dispatcher needs to send it. */
export interface DueWebhookDelivery {
  id: string;
  endpointId: string;
  url: string;
  secret: string;
  eventId: string;
  eventType: WebhookEventType;
  body: string;
  /** This attempt's number (1 = the first); the fence for recording its outcome. */
  attempt: number;
}

export interface WebhookAttemptFailure {
  statusCode: number | null;
  error: string;
  /** Wait before the next attempt (the backoff). */
  retryDelayMs: number;
  /** Retries stop once the next one would start later than this long after creation. */
  maxAgeMs: number;
}

export interface WebhookPage<T> {
  rows: T[];
  hasMore: boolean;
}

const DELIVERY_COLUMNS = `id, endpoint_id, tenant_id, event_id, event_type, job_id, body, status,
  attempts, next_attempt_at, last_status_code, last_error, last_attempt_at, delivered_at, created_at`;

function deliveryFromRow(row: Record<string, unknown>): WebhookDeliveryEntity {
  const entity = new WebhookDeliveryEntity();
  Object.assign(entity, {
    id: row.id,
    endpointId: row.endpoint_id,
    tenantId: row.tenant_id,
    eventId: row.event_id,
    eventType: row.event_type,
    jobId: row.job_id,
    body: row.body,
    status: row.status,
    attempts: row.attempts,
    nextAttemptAt: row.next_attempt_at,
    lastStatusCode: row.last_status_code,
    lastError: row.last_error,
    lastAttemptAt: row.last_attempt_at,
    deliveredAt: row.delivered_at,
    createdAt: row.created_at,
  });
  return entity;
}

/** Webhook endpoints, per tenant (R19), and their deliveries: the log and the dispatcher's queue. */
export class WebhooksRepository {
  constructor(private readonly dataSource: DataSource) {}

  /** Stores a new endpoint with a fresh `whsec_` secret; the caller shows it once. */
  async createEndpoint(
    tenantId: string,
    url: string,
    events: readonly WebhookEventType[],
  ): Promise<WebhookEndpointEntity> {
    const id = newUnderscoreId('we');
    await this.dataSource.getRepository(WebhookEndpointEntity).insert({
      id,
      tenantId,
      url,
      events: [...events],
      secret: `whsec_${randomBytes(32).toString('base64')}`,
    });
    return this.dataSource.getRepository(WebhookEndpointEntity).findOneByOrFail({ id });
  }

  findEndpoint(tenantId: string, id: string): Promise<WebhookEndpointEntity | null> {
    return this.dataSource.getRepository(WebhookEndpointEntity).findOneBy({ tenantId, id });
  }

  /** Newest first; `after` is the id of the previous page's last endpoint. */
  async listEndpoints(
    tenantId: string,
    after: string | undefined,
    limit: number,
  ): Promise<WebhookPage<WebhookEndpointEntity>> {
    const rows = await this.dataSource.query<Record<string, unknown>[]>(
      `SELECT id, tenant_id, url, events, secret, created_at FROM webhook_endpoints
        WHERE tenant_id = $1
          AND ($2::text IS NULL OR (created_at, id) <
               (SELECT created_at, id FROM webhook_endpoints WHERE id = $2 AND tenant_id = $1))
        ORDER BY created_at DESC, id DESC
        LIMIT $3`,
      [tenantId, after ?? null, limit + 1],
    );
    const endpoints = rows.slice(0, limit).map((row) => {
      const entity = new WebhookEndpointEntity();
      Object.assign(entity, {
        id: row.id,
        tenantId: row.tenant_id,
        url: row.url,
        events: row.events,
        secret: row.secret,
        createdAt: row.created_at,
      });
      return entity;
    });
    return { rows: endpoints, hasMore: rows.length > limit };
  }

  /** Deletes the endpoint and, by cascade, its delivery log; pending deliveries stop. */
  async deleteEndpoint(tenantId: string, id: string): Promise<boolean> {
    const result = await this.dataSource
      .getRepository(WebhookEndpointEntity)
      .delete({ tenantId, id });
    return (result.affected ?? 0) > 0;
  }

  /** An endpoint's delivery log, newest first; `after` is the previous page's last delivery id. */
  async listDeliveries(
    tenantId: string,
    endpointId: string,
    after: string | undefined,
    limit: number,
  ): Promise<WebhookPage<WebhookDeliveryEntity>> {
    const rows = await this.dataSource.query<Record<string, unknown>[]>(
      `SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries
        WHERE tenant_id = $1 AND endpoint_id = $2
          AND ($3::text IS NULL OR (created_at, id) <
               (SELECT created_at, id FROM webhook_deliveries
                 WHERE id = $3 AND tenant_id = $1 AND endpoint_id = $2))
        ORDER BY created_at DESC, id DESC
        LIMIT $4`,
      [tenantId, endpointId, after ?? null, limit + 1],
    );
    return { rows: rows.slice(0, limit).map(deliveryFromRow), hasMore: rows.length > limit };
  }

  findDelivery(
    tenantId: string,
    endpointId: string,
    id: string,
  ): Promise<WebhookDeliveryEntity | null> {
    return this.dataSource
      .getRepository(WebhookDeliveryEntity)
      .findOneBy({ tenantId, endpointId, id });
  }

  /**
   * A new delivery of a finished one's event (same event id and bytes, so the receiver sees
   * the same `webhook-id`), due now, with a fresh retry window. Null when the original is not
   * found for this tenant and endpoint, or is still pending (it will be retried anyway).
   */
  async redeliver(
    tenantId: string,
    endpointId: string,
    id: string,
  ): Promise<WebhookDeliveryEntity | 'pending' | null> {
    const original = await this.findDelivery(tenantId, endpointId, id);
    if (original === null) return null;
    if (original.status === 'pending') return 'pending';
    const copyId = newUnderscoreId('whdel');
    await this.dataSource.getRepository(WebhookDeliveryEntity).insert({
      id: copyId,
      endpointId: original.endpointId,
      tenantId: original.tenantId,
      eventId: original.eventId,
      eventType: original.eventType,
      jobId: original.jobId,
      body: original.body,
    });
    return this.dataSource.getRepository(WebhookDeliveryEntity).findOneByOrFail({ id: copyId });
  }

  /**
   * Claims up to `limit` due deliveries for one attempt each: counts the attempt and moves
   * `next_attempt_at` `leaseMs` ahead, so a dispatcher that dies mid-send leaves the row to be
   * retried when the lease runs out (at-least-once, same `webhook-id`). SKIP LOCKED lets
   * several API processes dispatch without sending one delivery twice at once.
   */
  async claimDue(limit: number, leaseMs: number): Promise<DueWebhookDelivery[]> {
    const result = await this.dataSource.query<unknown>(
      `UPDATE webhook_deliveries d
          SET attempts = d.attempts + 1, last_attempt_at = now(),
              next_attempt_at = now() + ($2::double precision * interval '1 millisecond')
         FROM (SELECT id FROM webhook_deliveries
                WHERE status = 'pending' AND next_attempt_at <= now()
                ORDER BY next_attempt_at
                LIMIT $1
                FOR UPDATE SKIP LOCKED) due, webhook_endpoints e
        WHERE d.id = due.id AND e.id = d.endpoint_id
        RETURNING d.id, d.endpoint_id, e.url, e.secret, d.event_id, d.event_type, d.body, d.attempts`,
      [limit, leaseMs],
    );
    return returningRows<Record<string, unknown>>(result).map((row) => ({
      id: row.id as string,
      endpointId: row.endpoint_id as string,
      url: row.url as string,
      secret: row.secret as string,
      eventId: row.event_id as string,
      eventType: row.event_type as WebhookEventType,
      body: row.body as string,
      attempt: row.attempts as number,
    }));
  }

  /** Records a 2xx answer. False when the claim was lost (another attempt took the row). */
  async recordDelivered(id: string, attempt: number, statusCode: number): Promise<boolean> {
    const result = await this.dataSource.getRepository(WebhookDeliveryEntity).update(
      { id, attempts: attempt, status: 'pending' },
      {
        status: 'delivered',
        lastStatusCode: statusCode,
        lastError: null,
        deliveredAt: () => 'now()',
        nextAttemptAt: null,
      },
    );
    return (result.affected ?? 0) > 0;
  }

  /**
   * Records a failed attempt: retried after `retryDelayMs`, or marked `failed` when that
   * would fall past the delivery's retry window. Returns the new status, or null when the
   * claim was lost.
   */
  async recordFailure(
    id: string,
    attempt: number,
    failure: WebhookAttemptFailure,
  ): Promise<'pending' | 'failed' | null> {
    const result = await this.dataSource.query<unknown>(
      `UPDATE webhook_deliveries
          SET last_status_code = $3, last_error = $4,
              status = CASE WHEN now() + $5::double precision * interval '1 millisecond'
                                 > created_at + $6::double precision * interval '1 millisecond'
                            THEN 'failed' ELSE 'pending' END,
              next_attempt_at = CASE WHEN now() + $5::double precision * interval '1 millisecond'
                                      > created_at + $6::double precision * interval '1 millisecond'
                                 THEN NULL
                                 ELSE now() + $5::double precision * interval '1 millisecond' END
        WHERE id = $1 AND attempts = $2 AND status = 'pending'
        RETURNING status`,
      [
        id,
        attempt,
        failure.statusCode,
        failure.error.slice(0, 1000),
        failure.retryDelayMs,
        failure.maxAgeMs,
      ],
    );
    const [row] = returningRows<{ status: 'pending' | 'failed' }>(result);
    return row?.status ?? null;
  }
}
