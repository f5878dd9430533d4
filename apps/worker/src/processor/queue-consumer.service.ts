import {
  Inject,
  Injectable,
  Logger,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
} from '@nestjs/common';
import { QUEUE_NAMES, type WorkerEnv } from '@lorafleet/contracts';
import { WorkersRepository } from '@lorafleet/db';
import { Worker } from 'bullmq';
import { cpus } from 'node:os';
import { probeBackend } from '../trainer/backend-probe';
import { WORKER_ENV, WORKER_IDENTITY, type WorkerIdentity } from '../tokens';
import { FineTuneProcessor } from './fine-tune.processor';

/** Owns the BullMQ consumer and the fleet-registry heartbeat of this process. */
@Injectable()
export class QueueConsumerService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('QueueConsumer');
  private worker: Worker | undefined;
  private heartbeat: NodeJS.Timeout | undefined;

  constructor(
    private readonly processor: FineTuneProcessor,
    private readonly workers: WorkersRepository,
    @Inject(WORKER_ENV) private readonly env: WorkerEnv,
    @Inject(WORKER_IDENTITY) private readonly identity: WorkerIdentity,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    // Fails the boot (exit 1 from main) when an explicit backend cannot load (R17).
    const backend = await probeBackend(this.env.LORAFLEET_BACKEND);
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
    });
    this.heartbeat = setInterval(() => {
      void this.workers
        .heartbeat(this.identity.id, this.worker?.isRunning() ? 'idle' : 'stopping', null)
        .catch(() => undefined);
    }, this.env.LORAFLEET_HEARTBEAT_MS);
    this.worker = new Worker(QUEUE_NAMES.fineTune, (job) => this.processor.process(job), {
      // BullMQ workers need blocking commands that never time out.
      connection: { url: this.env.REDIS_URL, maxRetriesPerRequest: null },
      prefix: this.env.LORAFLEET_QUEUE_PREFIX,
      concurrency: this.env.LORAFLEET_WORKER_CONCURRENCY,
      lockDuration: this.env.LORAFLEET_LOCK_MS,
      stalledInterval: this.env.LORAFLEET_STALLED_MS,
      // A stalled delivery (its worker died) must come back so another worker takes the job
      // over; Postgres counts those takeovers against LORAFLEET_MAX_ATTEMPTS instead.
      maxStalledCount: 1000,
    });
    this.worker.on('failed', (job, error) =>
      this.logger.warn(`delivery ${job?.id ?? '?'} failed: ${error.message}`),
    );
    this.worker.on('error', (error) => this.logger.warn(`queue error: ${error.message}`));
    this.logger.log(
      `worker ${this.identity.id} consuming "${QUEUE_NAMES.fineTune}" on backend ${backend}`,
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
    await closing;
    await this.workers.heartbeat(this.identity.id, 'gone', null).catch(() => undefined);
  }
}
