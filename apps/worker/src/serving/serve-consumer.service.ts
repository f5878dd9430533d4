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

/** How long one XREADGROUP blocks: also how soon a stop or a new base model is noticed. */
const READ_BLOCK_MS = 1000;
/** How often the models directory is listed again for new base models. */
const RESCAN_MS = 10_000;
/** Reply streams expire this long after their last entry (ADR 0006). */
const REPLY_TTL_SECONDS = 60;
/** A reply stream holds at most about this many entries; the API reads them as they come. */
const REPLY_MAXLEN = 1024;

type StreamEntries = [key: string, entries: [id: string, fields: string[]][]][];

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
  /** Request stream entry of each request in flight, acknowledged when it ends. */
  private readonly entries = new Map<string, { stream: string; id: string }>();
  private reader!: Redis;
  private writer!: Redis;
  private subscriber!: Redis;
  private bases: string[] = [];
  private scannedAt = 0;
  private stopping = false;
  private loop: Promise<void> | undefined;

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
    this.logger.log(
      `worker ${this.identity.id} serving completions (base models load on first use)`,
    );
  }

  async onApplicationShutdown(): Promise<void> {
    this.stopping = true;
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

  private async consume(): Promise<void> {
    while (!this.stopping) {
      try {
        await this.scanBases();
        const room =
          this.env.LORAFLEET_SERVE_MAX_BATCH * Math.max(1, this.processes.size) - this.entries.size;
        if (this.bases.length === 0 || room <= 0) {
          await new Promise((resolve) => setTimeout(resolve, 50));
          continue;
        }
        const read = (await this.reader.xreadgroup(
          'GROUP',
          SERVING_STREAMS.group,
          this.identity.id,
          'COUNT',
          room,
          'BLOCK',
          READ_BLOCK_MS,
          'STREAMS',
          ...this.bases.map((b) => this.stream(b)),
          ...this.bases.map(() => '>'),
        )) as StreamEntries | null;
        for (const [stream, entries] of read ?? []) {
          for (const [id, fields] of entries) this.dispatch(stream, id, fields);
        }
      } catch (error) {
        if (this.stopping) return;
        // An outage is logged once by RedisClients; pause instead of spinning on it.
        if (!this.redis.unreachable) this.logger.warn(`serving read failed: ${String(error)}`);
        await new Promise((resolve) => setTimeout(resolve, READ_BLOCK_MS));
      }
    }
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
    this.entries.set(request.requestId, { stream, id });
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
   * One round's replies in one round trip: an XADD per reply (trimmed, with its TTL renewed)
   * and, for requests that ended, the XACK of their request entry.
   */
  private write(replies: { requestId: string; reply: ServeReply }[]): void {
    const pipeline = this.writer.pipeline();
    for (const { requestId, reply } of replies) {
      const key = SERVING_STREAMS.replies(this.env.LORAFLEET_QUEUE_PREFIX, requestId);
      pipeline.xadd(key, 'MAXLEN', '~', REPLY_MAXLEN, '*', 'reply', JSON.stringify(reply));
      pipeline.expire(key, REPLY_TTL_SECONDS);
      const entry = this.entries.get(requestId);
      if (reply.kind !== 'delta' && entry) {
        pipeline.xack(entry.stream, SERVING_STREAMS.group, entry.id);
        this.entries.delete(requestId);
      }
    }
    pipeline.exec().catch((error: unknown) => {
      // The API's deadline answers those clients; Redis outages are logged once elsewhere.
      if (!this.redis.unreachable)
        this.logger.warn(`serving replies not written: ${String(error)}`);
    });
  }
}
