import {
  Inject,
  Injectable,
  Logger,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
} from '@nestjs/common';
import {
  SERVING_STREAMS,
  ServeRequestSchema,
  type ServeReply,
  type ServeRequest,
  type WorkerEnv,
} from '@lorafleet/contracts';
import { listBaseModels, resolveBaseModel } from '@lorafleet/data';
import { RedisClients, ServingAdaptersRepository } from '@lorafleet/db';
import type { Redis } from 'ioredis';
import { REDIS_CLIENTS, WORKER_ENV, WORKER_IDENTITY, type WorkerIdentity } from '../tokens';
import type { AdapterAnswer } from './serving-protocol';
import { ServingProcess } from './serving-process';
import { FIRST_REPLIES_LUA, HEARTBEAT_LUA } from './serving-scripts';

/** How long one XREADGROUP blocks: also how soon a stop or a new base model is noticed. */
const READ_BLOCK_MS = 1000;
/**
 * How often a worker looks at the streams of bases it has not loaded (a non-blocking read),
 * and so how long a request for such a base may wait: workers that have the base loaded block
 * on its stream and take its requests first (ADR 0006).
 */
const UNLOADED_POLL_MS = 250;
/** How often the models directory is listed again for new base models. */
const RESCAN_MS = 10_000;
/** Reply streams expire this long after their last entry (ADR 0006). */
const REPLY_TTL_SECONDS = 60;
/** A reply stream holds at most about this many entries; the API reads them as they come. */
const REPLY_MAXLEN = 1024;

/**
 * TEST ONLY (tests/e2e serving.spec.ts): the worker holds every request this long before it
 * hands it to a serving child, as a base load or prefill that does not end would, so a test
 * can kill a worker that holds a request with no token yet. Read from the environment, not
 * the validated WorkerEnv, to keep it out of the documented settings; never set in production.
 */
const TEST_HOLD_MS = Number(process.env.LORAFLEET_TEST_SERVE_HOLD_MS ?? 0);

type StreamEntries = [key: string, entries: [id: string, fields: string[]][]][];

/** A request this worker read (or claimed) and has not finished. */
interface HeldRequest {
  /** Its request stream and entry id there. */
  stream: string;
  id: string;
  /**
   * `pending`: in the group's pending list under this worker, nothing written yet (another
   * worker may take it over if this one falls silent); `starting`: its first replies are being
   * written under the ownership check; `started`: acknowledged, replies are plain writes.
   */
  state: 'pending' | 'starting' | 'started';
  /** Replies that arrived while its first write was in flight, written after it. */
  held: ServeReply[];
}

/**
 * The serve role (issue 19, ADR 0006): reads completion requests from one Redis stream per
 * base model, in a consumer group every serving worker joins, hands them to a serving child
 * per base (started on its first request), and writes each request's tokens to its reply
 * stream. Inference never runs on this process's event loop.
 */
@Injectable()
export class ServeConsumerService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('Serving');
  private readonly processes = new Map<string, ServingProcess>();
  /** Each request in flight by id: its stream entry, and whether it has replied yet. */
  private readonly entries = new Map<string, HeldRequest>();
  private reader!: Redis;
  private writer!: Redis;
  private subscriber!: Redis;
  private bases: string[] = [];
  private scannedAt = 0;
  private stopping = false;
  private loop: Promise<void> | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private claimedAt = 0;

  constructor(
    private readonly adapters: ServingAdaptersRepository,
    @Inject(WORKER_ENV) private readonly env: WorkerEnv,
    @Inject(WORKER_IDENTITY) private readonly identity: WorkerIdentity,
    @Inject(REDIS_CLIENTS) private readonly redis: RedisClients,
  ) {}

  onApplicationBootstrap(): void {
    // A blocking read holds its connection, so replies go out on another one.
    this.reader = this.redis.create('serving reader', { maxRetriesPerRequest: null });
    this.writer = this.redis.create('serving writer', { maxRetriesPerRequest: null });
    this.subscriber = this.redis.create('serving cancels', { maxRetriesPerRequest: null });
    this.subscriber.on('message', (_channel: string, requestId: string) => this.cancel(requestId));
    void this.subscriber
      .subscribe(SERVING_STREAMS.cancels(this.env.LORAFLEET_QUEUE_PREFIX))
      .catch((error: unknown) => this.logger.warn(`cannot subscribe to cancels: ${String(error)}`));
    this.loop = this.consume();
    this.heartbeat = setInterval(() => this.refreshPending(), this.claimEveryMs);
    this.logger.log(
      `worker ${this.identity.id} serving completions (base models load on first use)`,
    );
  }

  async onApplicationShutdown(): Promise<void> {
    this.stopping = true;
    clearInterval(this.heartbeat);
    for (const process of this.processes.values()) process.kill('the worker is shutting down');
    // The loop notices within one blocking read; with Redis gone it ends on the read's error.
    await Promise.race([
      this.loop,
      new Promise((resolve) => setTimeout(resolve, READ_BLOCK_MS * 2)),
    ]);
  }

  private stream(base: string): string {
    return SERVING_STREAMS.requests(this.env.LORAFLEET_QUEUE_PREFIX, base);
  }

  /** The base models under LORAFLEET_MODELS_DIR, each with its consumer group made. */
  private async scanBases(): Promise<void> {
    if (Date.now() - this.scannedAt < RESCAN_MS) return;
    this.scannedAt = Date.now();
    const names = listBaseModels(this.env.LORAFLEET_MODELS_DIR).map((m) => m.name);
    for (const name of names.filter((n) => !this.bases.includes(n))) {
      try {
        // From id 0: requests added before the first worker made the group are still read
        // (each carries a deadline, so stale ones are dropped unanswered).
        await this.writer.xgroup(
          'CREATE',
          this.stream(name),
          SERVING_STREAMS.group,
          '0',
          'MKSTREAM',
        );
      } catch (error) {
        if (!(error instanceof Error && error.message.startsWith('BUSYGROUP'))) throw error;
      }
    }
    this.bases = names;
  }

  /** Both the heartbeat's period and the claim scan's: a quarter of the claim idle time. */
  private get claimEveryMs(): number {
    return Math.max(50, Math.floor(this.env.LORAFLEET_SERVE_CLAIM_IDLE_MS / 4));
  }

  private async consume(): Promise<void> {
    while (!this.stopping) {
      try {
        await this.scanBases();
        let room =
          this.env.LORAFLEET_SERVE_MAX_BATCH * Math.max(1, this.processes.size) - this.entries.size;
        if (this.bases.length === 0 || room <= 0) {
          await new Promise((resolve) => setTimeout(resolve, 50));
          continue;
        }
        // Loaded bases first, for claims and for reads: a base is loaded on one worker before
        // a second one loads it, and a taken-over request skips a lazy load where it can.
        const loaded = this.bases.filter((b) => this.processes.has(b));
        const unloaded = this.bases.filter((b) => !this.processes.has(b));
        if (Date.now() - this.claimedAt >= this.claimEveryMs) {
          this.claimedAt = Date.now();
          for (const base of [...loaded, ...unloaded]) {
            if (room > 0) room -= await this.claimIdle(base, room);
          }
        }
        let taken = 0;
        if (loaded.length > 0 && room > 0) {
          taken += await this.read(
            loaded,
            room,
            unloaded.length > 0 ? UNLOADED_POLL_MS : READ_BLOCK_MS,
          );
        }
        if (unloaded.length > 0 && room - taken > 0) {
          // Non-blocking: a worker blocked on these streams would compete for their requests
          // with the workers that have the base loaded.
          taken += await this.read(unloaded, room - taken, null);
          if (loaded.length === 0 && taken === 0) {
            await new Promise((resolve) => setTimeout(resolve, UNLOADED_POLL_MS));
          }
        }
      } catch (error) {
        if (this.stopping) return;
        // An outage is logged once by RedisClients; pause instead of spinning on it.
        if (!this.redis.unreachable) this.logger.warn(`serving read failed: ${String(error)}`);
        await new Promise((resolve) => setTimeout(resolve, READ_BLOCK_MS));
      }
    }
  }

  /** New requests on these bases' streams, dispatched; returns how many. */
  private async read(bases: string[], count: number, blockMs: number | null): Promise<number> {
    const keys = [...bases.map((b) => this.stream(b)), ...bases.map(() => '>')];
    const group = SERVING_STREAMS.group;
    const read = (
      blockMs === null
        ? await this.reader.xreadgroup(
            'GROUP',
            group,
            this.identity.id,
            'COUNT',
            count,
            'STREAMS',
            ...keys,
          )
        : await this.reader.xreadgroup(
            'GROUP',
            group,
            this.identity.id,
            'COUNT',
            count,
            'BLOCK',
            blockMs,
            'STREAMS',
            ...keys,
          )
    ) as StreamEntries | null;
    let taken = 0;
    for (const [stream, entries] of read ?? []) {
      for (const [id, fields] of entries) {
        this.dispatch(stream, id, fields);
        taken += 1;
      }
    }
    return taken;
  }

  /**
   * Takes over requests of `base` that another worker read and went silent on for
   * LORAFLEET_SERVE_CLAIM_IDLE_MS (it died, or froze): only requests with no reply yet are in
   * the pending list (the first reply acknowledges them), so none of these has sent its client
   * any text, and running it here repeats nothing. Returns how many were taken.
   */
  private async claimIdle(base: string, count: number): Promise<number> {
    const stream = this.stream(base);
    const [, entries] = (await this.writer.xautoclaim(
      stream,
      SERVING_STREAMS.group,
      this.identity.id,
      this.env.LORAFLEET_SERVE_CLAIM_IDLE_MS,
      '0-0',
      'COUNT',
      count,
    )) as [next: string, entries: [id: string, fields: string[] | null][], deleted?: string[]];
    let taken = 0;
    for (const [id, fields] of entries) {
      // Trimmed away while pending: nothing to serve (Redis drops it from the pending list).
      if (!fields) continue;
      this.logger.warn(`taking over serving request ${id} on ${stream} from a silent worker`);
      this.dispatch(stream, id, fields);
      taken += 1;
    }
    return taken;
  }

  /**
   * Keeps this worker's pending entries from being claimed while it lives (`HEARTBEAT_LUA`);
   * a request another worker took over meanwhile (this one was frozen past the claim idle
   * time) is dropped here and cancelled in its serving child, so only the claimer answers it.
   */
  private refreshPending(): void {
    const byStream = new Map<string, string[]>();
    for (const held of this.entries.values()) {
      if (held.state !== 'pending') continue;
      byStream.set(held.stream, [...(byStream.get(held.stream) ?? []), held.id]);
    }
    for (const [stream, ids] of byStream) {
      this.writer
        .eval(HEARTBEAT_LUA, 1, stream, SERVING_STREAMS.group, this.identity.id, ...ids)
        .then((lost) => {
          for (const id of lost as string[]) {
            const requestId = this.requestIdOf(stream, id);
            // A first write issued since has its own check: it decides.
            if (requestId && this.entries.get(requestId)?.state === 'pending') {
              this.lose(requestId, 'it was taken over by another worker');
            }
          }
        })
        .catch((error: unknown) => {
          if (!this.redis.unreachable && !this.stopping)
            this.logger.warn(`serving heartbeat failed: ${String(error)}`);
        });
    }
  }

  private requestIdOf(stream: string, id: string): string | undefined {
    for (const [requestId, held] of this.entries) {
      if (held.stream === stream && held.id === id) return requestId;
    }
    return undefined;
  }

  /** Forgets a request this worker may no longer answer, and stops it in its serving child. */
  private lose(requestId: string, why: string): void {
    this.entries.delete(requestId);
    this.logger.warn(`serving request ${requestId} dropped here: ${why}`);
    for (const process of this.processes.values()) process.cancel(requestId);
  }

  /** A request whose client went away: its serving child drops it (when it holds it). */
  private cancel(requestId: string): void {
    const entry = this.entries.get(requestId);
    if (!entry) return;
    for (const process of this.processes.values()) process.cancel(requestId);
  }

  private dispatch(stream: string, id: string, fields: string[]): void {
    let request: ServeRequest;
    try {
      request = ServeRequestSchema.parse(JSON.parse(fields[fields.indexOf('request') + 1] ?? ''));
    } catch (error) {
      this.logger.warn(`dropping malformed serving request ${id} on ${stream}: ${String(error)}`);
      void this.writer.xack(stream, SERVING_STREAMS.group, id);
      return;
    }
    if (request.deadline < Date.now()) {
      // Its client has been answered with a timeout already.
      void this.writer.xack(stream, SERVING_STREAMS.group, id);
      return;
    }
    // Claimed back from itself (its heartbeat was late): it is already being served here.
    if (this.entries.has(request.requestId)) return;
    this.entries.set(request.requestId, { stream, id, state: 'pending', held: [] });
    if (TEST_HOLD_MS > 0) {
      setTimeout(() => {
        if (this.entries.has(request.requestId)) this.processFor(request)?.submit(request);
      }, TEST_HOLD_MS).unref();
      return;
    }
    const process = this.processFor(request);
    if (process) process.submit(request);
  }

  /** The serving child of the request's base, started on the base's first request. */
  private processFor(request: ServeRequest): ServingProcess | undefined {
    const held = this.processes.get(request.baseModel);
    if (held) return held;
    let dir: string;
    try {
      dir = resolveBaseModel(this.env.LORAFLEET_MODELS_DIR, request.baseModel).dir;
    } catch (error) {
      this.write([
        {
          requestId: request.requestId,
          reply: {
            kind: 'error',
            code: 'service_unavailable',
            message: `base model "${request.baseModel}" is missing on worker ${this.identity.id}: ${error instanceof Error ? error.message : String(error)}`,
            param: 'model',
          },
        },
      ]);
      return undefined;
    }
    this.logger.log(`loading base model "${request.baseModel}" for serving`);
    const process = new ServingProcess(
      {
        baseModel: request.baseModel,
        modelDir: dir,
        backend: this.env.LORAFLEET_BACKEND,
        adapterCacheBytes: this.env.LORAFLEET_SERVE_ADAPTER_CACHE_MB * 1024 * 1024,
        maxBatchSize: this.env.LORAFLEET_SERVE_MAX_BATCH,
        kvCacheBytes:
          this.env.LORAFLEET_SERVE_KV_CACHE_MB === undefined
            ? null
            : this.env.LORAFLEET_SERVE_KV_CACHE_MB * 1024 * 1024,
      },
      {
        adapter: (adapterId) => this.fetchAdapter(adapterId),
        replies: (replies) => this.write(replies),
        exited: (reason) => {
          if (this.processes.get(request.baseModel) === process)
            this.processes.delete(request.baseModel);
          if (!this.stopping) this.logger.warn(reason);
        },
      },
    );
    this.processes.set(request.baseModel, process);
    return process;
  }

  private async fetchAdapter(adapterId: string): Promise<AdapterAnswer> {
    const row = await this.adapters.findForServing(adapterId);
    if (!row) return { adapterId, missing: `adapter ${adapterId} no longer exists` };
    return {
      adapterId,
      adapterConfig: row.adapterConfig,
      safetensors: new Uint8Array(row.weights.buffer, row.weights.byteOffset, row.weights.length),
      baseModelSha256: row.baseModelSha256,
    };
  }

  /**
   * One round's replies. A request's first replies go out under `FIRST_REPLIES_LUA` (written
   * only while its entry is still this worker's, acknowledging it); replies arriving while that
   * is in flight wait for it. Replies of started requests go out in one pipeline (an XADD each,
   * trimmed, with the TTL renewed). A request not held here (taken over, or ended) writes
   * nothing.
   */
  private write(replies: { requestId: string; reply: ServeReply }[]): void {
    const pipeline = this.writer.pipeline();
    const starting = new Set<string>();
    for (const { requestId, reply } of replies) {
      const held = this.entries.get(requestId);
      if (!held) continue;
      if (held.state === 'started') {
        this.append(pipeline, requestId, [reply]);
        if (reply.kind !== 'delta') this.entries.delete(requestId);
        continue;
      }
      held.held.push(reply);
      if (held.state === 'pending') {
        held.state = 'starting';
        starting.add(requestId);
      }
    }
    for (const requestId of starting) this.writeFirst(requestId);
    if (pipeline.length === 0) return;
    pipeline.exec().catch((error: unknown) => this.writeFailed(error));
  }

  private append(
    pipeline: ReturnType<Redis['pipeline']>,
    requestId: string,
    replies: ServeReply[],
  ): void {
    const key = SERVING_STREAMS.replies(this.env.LORAFLEET_QUEUE_PREFIX, requestId);
    for (const reply of replies) {
      pipeline.xadd(key, 'MAXLEN', '~', REPLY_MAXLEN, '*', 'reply', JSON.stringify(reply));
    }
    pipeline.expire(key, REPLY_TTL_SECONDS);
  }

  private writeFirst(requestId: string): void {
    const held = this.entries.get(requestId)!;
    const first = held.held.splice(0);
    this.writer
      .eval(
        FIRST_REPLIES_LUA,
        2,
        held.stream,
        SERVING_STREAMS.replies(this.env.LORAFLEET_QUEUE_PREFIX, requestId),
        SERVING_STREAMS.group,
        this.identity.id,
        held.id,
        REPLY_MAXLEN,
        REPLY_TTL_SECONDS,
        ...first.map((reply) => JSON.stringify(reply)),
      )
      .then((written) => {
        if (written !== 1) {
          this.lose(requestId, 'it was taken over by another worker before its first token');
          return;
        }
        const ended = first.some((reply) => reply.kind !== 'delta');
        if (ended) {
          this.entries.delete(requestId);
          return;
        }
        held.state = 'started';
        // Replies of the rounds since, in order, and the end if it came.
        const later = held.held.splice(0);
        if (later.length === 0) return;
        const pipeline = this.writer.pipeline();
        this.append(pipeline, requestId, later);
        if (later.some((reply) => reply.kind !== 'delta')) this.entries.delete(requestId);
        pipeline.exec().catch((error: unknown) => this.writeFailed(error));
      })
      .catch((error: unknown) => {
        // Unknown whether it was written: stop the request rather than risk repeating text.
        this.lose(requestId, `its first reply could not be written (${String(error)})`);
        this.writeFailed(error);
      });
  }

  private writeFailed(error: unknown): void {
    // The API's deadline answers those clients; Redis outages are logged once elsewhere.
    if (!this.redis.unreachable) this.logger.warn(`serving replies not written: ${String(error)}`);
  }
}
