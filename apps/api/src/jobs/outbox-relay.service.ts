import {
  Inject,
  Injectable,
  Logger,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
} from '@nestjs/common';
import { FINE_TUNE_JOB_NAME, type ApiEnv } from '@lorafleet/contracts';
import { OutboxRepository } from '@lorafleet/db';
import type { Queue } from 'bullmq';
import { API_ENV } from '../config/api-env.token';
import { FINE_TUNE_QUEUE } from '../infra/tokens';

/**
 * Options of every fine-tune delivery. Retries are decided by the worker against Postgres,
 * not by BullMQ's counter. Finished deliveries are removed at once so the same job id can
 * be enqueued again after a pause, hand-back or retry.
 */
export const BULLMQ_JOB_OPTIONS = {
  attempts: 1,
  removeOnComplete: true,
  removeOnFail: true,
} as const;

/**
 * Moves committed outbox entries into BullMQ (R1, R3). The BullMQ jobId is the job id, so a
 * relay that crashes between `add` and `markDispatched` and runs again adds nothing new.
 */
@Injectable()
export class OutboxRelayService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('OutboxRelay');
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;

  constructor(
    private readonly outbox: OutboxRepository,
    @Inject(FINE_TUNE_QUEUE) private readonly queue: Queue,
    @Inject(API_ENV) private readonly env: ApiEnv,
  ) {}

  onApplicationBootstrap(): void {
    this.timer = setInterval(() => this.kick(), this.env.LORAFLEET_OUTBOX_POLL_MS);
    this.kick();
  }

  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }

  /** Runs a relay pass now, or right after the one in progress. */
  kick(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.relayPass()
      .catch((error: unknown) => this.logger.warn(`relay pass failed: ${String(error)}`))
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  private async relayPass(): Promise<void> {
    for (const entry of await this.outbox.pending(100)) {
      try {
        await this.queue.add(FINE_TUNE_JOB_NAME, entry.payload, {
          ...BULLMQ_JOB_OPTIONS,
          jobId: entry.jobId,
          ...(entry.delayMs > 0 ? { delay: entry.delayMs } : {}),
        });
        await this.outbox.markDispatched(entry.id);
      } catch (error) {
        await this.outbox.recordFailure(entry.id, String(error));
        throw error;
      }
    }
  }
}
