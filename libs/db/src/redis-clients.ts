import { RedisConnection } from 'bullmq';
import { Redis, type RedisOptions } from 'ioredis';

/** The two levels the outage messages use; Nest's `Logger` fits. */
export interface RedisOutageLogger {
  warn(message: string): void;
  log(message: string): void;
}

/** Socket-level failures: Redis is unreachable, as opposed to a command that Redis refused. */
const CONNECTION_ERROR_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
]);
const CONNECTION_ERROR_MESSAGE =
  /Connection is closed|ECONNREFUSED|ECONNRESET|ETIMEDOUT|Stream isn't writeable|enableOfflineQueue|MaxRetriesPerRequest|Reached the max retries/i;

/** Whether an error means "Redis is unreachable" (the outage is logged once elsewhere). */
export function isRedisConnectionError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as NodeJS.ErrnoException).code;
  return (
    (code !== undefined && CONNECTION_ERROR_CODES.has(code)) ||
    CONNECTION_ERROR_MESSAGE.test(error.message)
  );
}

/**
 * Ends a client now, whatever its state. ioredis's `disconnect()` does nothing to a client
 * that waits to reconnect (it only cancels the timer, and the client stays "reconnecting"
 * with its offline queue pending for ever, so BullMQ's close, which waits for the `end`
 * event, hung). A connect attempt of a manually closed client ends it instead: it fails,
 * the offline queue is rejected with "Connection is closed" and `end` is emitted; if Redis
 * is back by then, the client is closed as soon as it is ready.
 */
function closeNow(client: Redis): void {
  const waitingToReconnect = client.status === 'reconnecting';
  client.disconnect();
  if (!waitingToReconnect) return;
  client.once('ready', () => client.disconnect());
  client.connect().catch(() => undefined);
}

let closedConnectionsGuarded = false;

/**
 * BullMQ 5's `RedisConnection` re-emits the failure of its still-pending initialisation as an
 * `error` event, also after `close()` has removed every listener (redis-connection.js: the
 * `initializing.catch` in the constructor; `close()` ends with `removeAllListeners()`). An
 * `error` event without a listener throws, so a worker stopped while Redis was unreachable
 * could die with exit 1 from a connection it had already closed (seen in CI: "Emitted 'error'
 * event on RedisConnection instance"). Once a connection is closed its errors concern nobody:
 * they are dropped there and only there; an open connection's errors reach their listeners or
 * throw as before.
 */
export function guardClosedBullmqConnections(): void {
  if (closedConnectionsGuarded) return;
  closedConnectionsGuarded = true;
  type Emit = (this: RedisConnection, event: string | symbol, ...args: unknown[]) => boolean;
  const prototype = RedisConnection.prototype as unknown as { emit: Emit };
  const emit = prototype.emit;
  prototype.emit = function guardedEmit(this: RedisConnection, event, ...args) {
    if (event === 'error' && this.status === 'closed' && this.listenerCount('error') === 0) {
      return false;
    }
    return emit.call(this, event, ...args);
  };
}

/**
 * An ioredis client that reports itself and every `duplicate()` of itself: BullMQ's Worker
 * makes its blocking connection by duplicating the one it is given, and that copy needs the
 * same `error` listener and must be closable at shutdown like the others.
 */
class TrackedRedis extends Redis {
  constructor(
    url: string,
    options: RedisOptions,
    private readonly track: (client: Redis) => void,
  ) {
    super(url, options);
    track(this);
  }

  override duplicate(override?: Partial<RedisOptions>): Redis {
    const copy = super.duplicate(override);
    this.track(copy);
    return copy;
  }
}

/**
 * Every ioredis client of one process (api or worker), BullMQ's included: each gets an `error`
 * listener. Without one, ioredis prints `[ioredis] Unhandled error event` with a multi-line
 * stack on every reconnect attempt, which breaks a JSON log apart (issue 14, item 15). An
 * outage is logged once, when the first client loses Redis, and its end once, when every
 * client that lost it is ready again, instead of once per retry (several per second).
 */
export class RedisClients {
  private readonly clients = new Set<Redis>();
  /** Clients that failed and have not been ready since. */
  private readonly failing = new Set<Redis>();
  private outageStartedAt: number | undefined;
  private closed = false;

  constructor(
    private readonly url: string,
    private readonly logger: RedisOutageLogger,
  ) {
    guardClosedBullmqConnections();
  }

  /** A new client on the process's Redis URL; `name` appears in the outage message. */
  create(name: string, options: RedisOptions = {}): Redis {
    return new TrackedRedis(this.url, options, (client) => this.watch(name, client));
  }

  /** True while some client has lost Redis and not reconnected. */
  get unreachable(): boolean {
    return this.failing.size > 0;
  }

  /**
   * For the `error` events of BullMQ's Queue and Worker, which repeat their connections'
   * errors: those are already counted by the client listeners, so only the others (a
   * failed script, a lost lock) are logged, one line each.
   */
  reportError(source: string, error: Error): void {
    if (this.closed || isRedisConnectionError(error)) return;
    this.logger.warn(`${source} error: ${error.message}`);
  }

  /**
   * Drops every connection at once. Commands waiting for Redis (a QUIT that BullMQ's close
   * sends, with an offline queue that never drains during an outage) fail with "Connection
   * is closed" instead of holding the shutdown forever.
   */
  disconnectAll(): void {
    this.closed = true;
    for (const client of this.clients) closeNow(client);
  }

  private watch(name: string, client: Redis): void {
    this.clients.add(client);
    client.on('error', (error: Error) => this.failed(name, client, error));
    client.on('ready', () => this.ready(client));
    client.on('end', () => {
      this.clients.delete(client);
      // A client closed for good no longer counts towards the outage, but its end is no
      // recovery either: with no failing client left the outage is over without a message.
      this.failing.delete(client);
      if (this.failing.size === 0) this.outageStartedAt = undefined;
    });
  }

  private failed(name: string, client: Redis, error: Error): void {
    if (this.closed) return;
    const first = this.failing.size === 0;
    this.failing.add(client);
    if (!first || this.outageStartedAt !== undefined) return;
    this.outageStartedAt = Date.now();
    this.logger.warn(
      `redis unreachable (${name} connection: ${error.message || error.name}); ` +
        'reconnecting in the background, logged again once it is back',
    );
  }

  private ready(client: Redis): void {
    if (this.failing.delete(client)) this.maybeRecovered();
  }

  private maybeRecovered(): void {
    if (this.failing.size > 0 || this.outageStartedAt === undefined || this.closed) return;
    const seconds = ((Date.now() - this.outageStartedAt) / 1000).toFixed(1);
    this.outageStartedAt = undefined;
    this.logger.log(`redis reachable again after ${seconds} s`);
  }
}
