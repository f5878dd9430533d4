import {
  Inject,
  Injectable,
  Logger,
  Optional,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
} from '@nestjs/common';
import { LORAFLEET_VERSION, type ApiEnv } from '@lorafleet/contracts';
import { WebhooksRepository, type DueWebhookDelivery } from '@lorafleet/db';
import type { LookupAddress } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import { API_ENV } from '../config/api-env.token';
import { MetricsService } from '../ops/metrics.service';
import { WebhookTargetRefusedError, resolveWebhookHost } from './webhook-address';
import { webhookHeaders } from './webhook-signature';

/** Deliveries claimed per pass; they are sent concurrently. */
const BATCH = 20;
/** A receiver's answer is read up to this many bytes, then dropped: only its status counts. */
const MAX_RESPONSE_BYTES = 64 * 1024;

/** The outcome of one attempt: a 2xx status, or why it failed. */
export type WebhookAttemptOutcome =
  { ok: true; statusCode: number } | { ok: false; statusCode: number | null; error: string };

/**
 * One POST of a signed event to `url`. The host is resolved and vetted first (the SSRF
 * guard), and the connection is pinned to the vetted addresses, so a DNS answer that changes
 * between the check and the connect cannot redirect it. Redirects are not followed: a 3xx
 * is a failure like any other non-2xx.
 */
export async function postWebhook(
  delivery: Pick<DueWebhookDelivery, 'url' | 'secret' | 'eventId' | 'body'>,
  options: { timeoutMs: number; allowPrivate: boolean; signal?: AbortSignal },
): Promise<WebhookAttemptOutcome> {
  const url = new URL(delivery.url);
  let addresses: LookupAddress[];
  try {
    addresses = await resolveWebhookHost(url.hostname, options.allowPrivate);
  } catch (error) {
    const message = error instanceof WebhookTargetRefusedError ? error.message : String(error);
    return { ok: false, statusCode: null, error: `refused: ${message}` };
  }
  const pinnedLookup: LookupFunction = (_hostname, lookupOptions, callback) => {
    if (lookupOptions.all) {
      (callback as unknown as (error: null, addresses: LookupAddress[]) => void)(null, addresses);
    } else {
      callback(null, addresses[0].address, addresses[0].family);
    }
  };
  const headers = {
    'content-type': 'application/json',
    'user-agent': `lorafleet-webhooks/${LORAFLEET_VERSION}`,
    ...webhookHeaders(
      delivery.secret,
      delivery.eventId,
      Math.floor(Date.now() / 1000),
      delivery.body,
    ),
  };
  const signal = options.signal
    ? AbortSignal.any([options.signal, AbortSignal.timeout(options.timeoutMs)])
    : AbortSignal.timeout(options.timeoutMs);
  const transport = url.protocol === 'https:' ? https : http;
  return new Promise<WebhookAttemptOutcome>((resolve) => {
    const request = transport.request(
      url,
      { method: 'POST', headers, lookup: pinnedLookup, signal, agent: false },
      (response) => {
        const statusCode = response.statusCode ?? 0;
        let read = 0;
        response.on('data', (chunk: Buffer) => {
          read += chunk.length;
          if (read > MAX_RESPONSE_BYTES) response.destroy();
        });
        const settle = () =>
          resolve(
            statusCode >= 200 && statusCode < 300
              ? { ok: true, statusCode }
              : { ok: false, statusCode, error: `HTTP ${statusCode}` },
          );
        response.on('end', settle);
        response.on('close', settle);
        response.on('error', settle);
      },
    );
    request.on('error', (error: NodeJS.ErrnoException) => {
      const reason =
        error.name === 'AbortError' || signal.aborted
          ? `no answer within ${options.timeoutMs} ms`
          : (error.code ?? error.message);
      resolve({ ok: false, statusCode: null, error: reason });
    });
    request.end(delivery.body);
  });
}

/**
 * Sends webhook deliveries (issue 20). It runs in every API process, never in a worker, so
 * a slow receiver cannot hold up training. Each pass claims due rows of the
 * `webhook_deliveries` outbox (SKIP LOCKED, so API processes share the work), sends them
 * concurrently and records each outcome; a failure is retried after
 * `LORAFLEET_WEBHOOK_RETRY_BASE_MS` × 2^(attempt − 1) until `LORAFLEET_WEBHOOK_MAX_AGE_MS` after
 * the event, then the delivery is marked failed. A claim leases the row for twice the attempt
 * timeout: if this process dies mid-send, another pass sends it again with the same
 * `webhook-id` once the lease runs out.
 */
@Injectable()
export class WebhookDispatcherService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('WebhookDispatcher');
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private readonly shutdown = new AbortController();

  constructor(
    private readonly webhooks: WebhooksRepository,
    @Inject(API_ENV) private readonly env: ApiEnv,
    @Optional() private readonly metrics?: MetricsService,
  ) {}

  onApplicationBootstrap(): void {
    this.timer = setInterval(() => this.kick(), this.env.LORAFLEET_OUTBOX_POLL_MS);
    this.kick();
  }

  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.timer);
    // In-flight sends stop now; their rows stay leased and are retried after the lease.
    this.shutdown.abort();
    await this.running;
  }

  /** Runs a pass now, or right after the one in progress. */
  kick(): void {
    if (this.shutdown.signal.aborted) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.pass()
      .catch((error: unknown) => this.logger.warn(`webhook pass failed: ${String(error)}`))
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  /** Delay before the retry that follows failed attempt number `attempt` (1-based). */
  retryDelayMs(attempt: number): number {
    return this.env.LORAFLEET_WEBHOOK_RETRY_BASE_MS * 2 ** Math.min(attempt - 1, 40);
  }

  private async pass(): Promise<void> {
    for (;;) {
      const due = await this.webhooks.claimDue(BATCH, 2 * this.env.LORAFLEET_WEBHOOK_TIMEOUT_MS);
      await Promise.all(due.map((delivery) => this.send(delivery)));
      if (due.length < BATCH || this.shutdown.signal.aborted) return;
    }
  }

  private async send(delivery: DueWebhookDelivery): Promise<void> {
    const outcome = await postWebhook(delivery, {
      timeoutMs: this.env.LORAFLEET_WEBHOOK_TIMEOUT_MS,
      allowPrivate: this.env.LORAFLEET_WEBHOOK_ALLOW_PRIVATE === '1',
      signal: this.shutdown.signal,
    });
    // Shutting down mid-send says nothing about the receiver: leave the lease to expire.
    if (!outcome.ok && this.shutdown.signal.aborted) return;
    if (outcome.ok) {
      await this.webhooks.recordDelivered(delivery.id, delivery.attempt, outcome.statusCode);
      this.metrics?.observeWebhookAttempt('delivered');
      return;
    }
    const status = await this.webhooks.recordFailure(delivery.id, delivery.attempt, {
      statusCode: outcome.statusCode,
      error: outcome.error,
      retryDelayMs: this.retryDelayMs(delivery.attempt),
      maxAgeMs: this.env.LORAFLEET_WEBHOOK_MAX_AGE_MS,
    });
    this.metrics?.observeWebhookAttempt(status === 'failed' ? 'gave_up' : 'failed');
    if (status === 'failed') {
      this.logger.warn(
        `webhook delivery ${delivery.id} (${delivery.eventType}) to endpoint ${delivery.endpointId} failed for good after ${delivery.attempt} attempts: ${outcome.error}`,
      );
    }
  }
}
