import {
  Inject,
  Injectable,
  Logger,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
} from '@nestjs/common';
import { QUEUE_NAMES, type WorkerEnv } from '@lorafleet/contracts';
import { RedisClients, WorkersRepository, shutdownReserveMs } from '@lorafleet/db';
import { Worker } from 'bullmq';
import { cpus } from 'node:os';
import { probeBackend } from '../trainer/backend-probe';
import { REDIS_CLIENTS, WORKER_ENV, WORKER_IDENTITY, type WorkerIdentity } from '../tokens';
import { FineTuneProcessor } from './fine-tune.processor';

/** How long a close of the BullMQ worker may take with Redis reachable. */
const REDIS_CLOSE_MS = 1000;

/** Whether `promise` settles within `ms` (a rejection counts: it is awaited again after). */
async function settlesWithin(promise: Promise<unknown> | undefined, ms: number): Promise<boolean> {
  if (!promise) return true;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  const settled = promise.then(
    () => true,
    () => true,
  );
  try {
    return await Promise.race([settled, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Owns the BullMQ consumer and the fleet-registry heartbeat of this process. */
@Injectable()
export class QueueConsumerService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('QueueConsumer');
  private worker: Worker | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  /** Deliveries whose processor call has not returned yet. */
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    private readonly processor: FineTuneProcessor,
    private readonly workers: WorkersRepository,
    @Inject(WORKER_ENV) private readonly env: WorkerEnv,
    @Inject(WORKER_IDENTITY) private readonly identity: WorkerIdentity,
    @Inject(REDIS_CLIENTS) private readonly redis: RedisClients,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    // Fails the boot (exit 1 from main) when an explicit backend cannot load (R17).
    const { backend, memoryLimitMb } = await probeBackend(this.env.LORAFLEET_BACKEND);
    this.processor.memoryLimitMb = memoryLimitMb;
    await this.workers.register({
      id: this.identity.id,
      host: this.identity.host,
      pid: this.identity.pid,
      backend,
      device: backend.startsWith('tensorflow-gpu') ? 'cuda' : (cpus()[0]?.model.trim() ?? null),
      versions: {
        node: process.version,
        lorafleet: '0.1.0',
        requested_backend: this.env.LORAFLEET_BACKEND,
      },
      memoryLimitMb,
    });
    // The processor knows whether a job is running; the timer only says "still here"
    // (issue 14 item 12: it used to overwrite busy with idle mid-run).
    this.heartbeat = setInterval(
      () => this.processor.reportStatus(this.worker?.isRunning() === false),
      this.env.LORAFLEET_HEARTBEAT_MS,
    );
    // A serve-only worker (issue 19) registers and heartbeats but takes no training jobs.
    if (!this.env.LORAFLEET_WORKER_ROLES.includes('train')) return;
    this.worker = new Worker(
      QUEUE_NAMES.fineTune,
      (job, token) => this.track(this.processor.process(job, token)),
      {
        // BullMQ workers need blocking commands that never time out. BullMQ duplicates this
        // client for its blocking connection; RedisClients tracks the copy too.
        connection: this.redis.create('bullmq worker', { maxRetriesPerRequest: null }),
        prefix: this.env.LORAFLEET_QUEUE_PREFIX,
        concurrency: this.env.LORAFLEET_WORKER_CONCURRENCY,
        lockDuration: this.env.LORAFLEET_LOCK_MS,
        stalledInterval: this.env.LORAFLEET_STALLED_MS,
        // A stalled delivery (its worker died) must come back so another worker takes the job
        // over; Postgres counts those takeovers against LORAFLEET_MAX_ATTEMPTS instead.
        maxStalledCount: 1000,
      },
    );
    this.worker.on('failed', (job, error) =>
      this.logger.warn(`delivery ${job?.id ?? '?'} failed: ${error.message}`),
    );
    // Connection errors are logged once per outage by RedisClients; BullMQ repeats each
    // of them here on every reconnect attempt.
    this.worker.on('error', (error) => this.redis.reportError('queue', error));
    this.logger.log(
      `worker ${this.identity.id} consuming "${QUEUE_NAMES.fineTune}" on backend ${backend}` +
        (memoryLimitMb === null ? '' : `, memory limit ${memoryLimitMb} MiB`),
    );
  }

  /**
   * SIGTERM (R12): stop fetching, let running trainers checkpoint and hand their jobs back,
   * then close the BullMQ worker once those deliveries have returned.
   */
  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.heartbeat);
    const closing = this.worker?.close();
    await this.processor.shutdown();
    // Each delivery hands its job back in Postgres after its trainer stopped. BullMQ's close
    // waits for that, but not when it is itself left waiting below, so wait here: else the
    // hand-back raced Postgres being closed and the job stayed `running` (issue 14, item 13).
    // Within half the reserve the grace keeps for it; one stuck on Redis is left behind.
    const graceMs = this.env.LORAFLEET_SHUTDOWN_GRACE_MS;
    await settlesWithin(Promise.allSettled([...this.inFlight]), shutdownReserveMs(graceMs) / 2);
    // With Redis unreachable, close() waits for ever: completing the deliveries and QUIT sit
    // in the offline queue until Redis is back (issue 14, item 13). The jobs are already
    // handed back in Postgres, so go on without it; the process exits after the remaining
    // hooks and BullMQ's locks expire in Redis. (Cutting the connections instead is worse:
    // BullMQ then retries completing the delivery without a pause while closing, a loop of
    // promises that starves every timer, the shutdown deadline's included.) With Redis up,
    // close() needs a round trip or two; longer means Redis went away just now.
    if (await settlesWithin(closing, this.redis.unreachable ? 0 : REDIS_CLOSE_MS)) {
      // The connection given to BullMQ is shared, so its close() leaves it open.
      this.redis.disconnectAll();
    } else {
      this.logger.warn('redis unreachable: leaving the queue without closing its connections');
    }
    // Through the processor, so that no status write of a finished attempt lands after it.
    await this.processor.reportGone();
  }

  private track(delivery: Promise<void>): Promise<void> {
    this.inFlight.add(delivery);
    const forget = () => this.inFlight.delete(delivery);
    delivery.then(forget, forget);
    return delivery;
  }
}
