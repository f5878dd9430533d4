import { Inject, Injectable, type OnApplicationShutdown } from '@nestjs/common';
import {
  SERVING_STREAMS,
  ServeReplySchema,
  type ApiEnv,
  type ServeReply,
  type ServeRequest,
} from '@lorafleet/contracts';
import type { RedisClients } from '@lorafleet/db';
import type { Redis } from 'ioredis';
import { API_ENV } from '../config/api-env.token';
import { ApiError } from '../errors/api-error';
import { REDIS_CLIENTS } from '../infra/tokens';

/** Request streams are trimmed to about this many entries (acknowledged ones are history). */
const REQUEST_MAXLEN = 10_000;

/**
 * The API's side of serving (issue 19, ADR 0006): a request goes onto its base model's stream
 * for any serving worker's consumer group, and its reply stream is read as the worker writes
 * it. A blocking read holds its connection, so each request in flight borrows one from a
 * small pool of idle connections instead of waiting behind the others' reads.
 */
@Injectable()
export class ServingGateway implements OnApplicationShutdown {
  private readonly idle: Redis[] = [];
  private readonly writer: Redis;
  private closed = false;

  constructor(
    @Inject(API_ENV) private readonly env: ApiEnv,
    @Inject(REDIS_CLIENTS) private readonly redis: RedisClients,
  ) {
    // Fails at once with Redis down (a 503 through the exception filter), like the API's
    // other commands (R4), instead of queueing.
    this.writer = redis.create('serving', { maxRetriesPerRequest: 1, enableOfflineQueue: false });
  }

  onApplicationShutdown(): void {
    this.closed = true;
    for (const connection of this.idle.splice(0)) connection.disconnect();
  }

  async enqueue(request: ServeRequest): Promise<void> {
    await this.writer.xadd(
      SERVING_STREAMS.requests(this.env.LORAFLEET_QUEUE_PREFIX, request.baseModel),
      'MAXLEN',
      '~',
      REQUEST_MAXLEN,
      '*',
      'request',
      JSON.stringify(request),
    );
  }

  /**
   * The replies of `requestId` in order, ending after its `done` or `error`. A worker silent
   * past the deadline (the first token's, then between tokens) ends it with a 504: the worker
   * died or stalled, and a retry may reach another one. `signal` stops reading (the client
   * went away). The reply stream is deleted at the end.
   */
  async *replies(requestId: string, signal: AbortSignal): AsyncGenerator<ServeReply> {
    const key = SERVING_STREAMS.replies(this.env.LORAFLEET_QUEUE_PREFIX, requestId);
    const connection = this.borrow();
    let lastId = '0';
    let timeoutMs = this.env.LORAFLEET_SERVE_FIRST_TOKEN_TIMEOUT_MS;
    let deadline = Date.now() + timeoutMs;
    let healthy = true;
    let ended = false;
    try {
      for (;;) {
        if (signal.aborted) return;
        const left = deadline - Date.now();
        if (left <= 0) {
          throw new ApiError(
            'gateway_timeout',
            `No serving worker answered within ${timeoutMs} ms; the worker may have stopped. Retry the request.`,
          );
        }
        // Short blocks so that a client that went away frees its connection soon.
        const read = await connection.xread(
          'COUNT',
          256,
          'BLOCK',
          Math.min(left, 1000),
          'STREAMS',
          key,
          lastId,
        );
        const entries = read?.[0]?.[1] ?? [];
        if (entries.length === 0) continue;
        timeoutMs = this.env.LORAFLEET_SERVE_TOKEN_TIMEOUT_MS;
        deadline = Date.now() + timeoutMs;
        for (const [id, fields] of entries) {
          lastId = id;
          const reply = ServeReplySchema.parse(JSON.parse(fields[1] ?? ''));
          if (reply.kind !== 'delta') ended = true;
          yield reply;
          if (ended) return;
        }
      }
    } catch (error) {
      healthy = false;
      throw error;
    } finally {
      // The client went away (or the wait failed) before the end: the worker may stop.
      if (!ended) {
        void this.writer
          .publish(SERVING_STREAMS.cancels(this.env.LORAFLEET_QUEUE_PREFIX), requestId)
          .catch(() => undefined);
      }
      this.giveBack(connection, healthy);
      void this.writer.del(key).catch(() => undefined); // else it expires (a minute)
    }
  }

  private borrow(): Redis {
    // A fresh connection queues its first command until it is connected; with Redis down
    // that command fails after one retry.
    return this.idle.pop() ?? this.redis.create('serving reader', { maxRetriesPerRequest: 1 });
  }

  /** A connection that failed mid-read may hold a stale reply: it is closed, not reused. */
  private giveBack(connection: Redis, healthy: boolean): void {
    if (healthy && !this.closed && this.idle.length < 64) this.idle.push(connection);
    else connection.disconnect();
  }
}
