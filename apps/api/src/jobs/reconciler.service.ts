import {
  Inject,
  Injectable,
  Logger,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
} from '@nestjs/common';
import { FINE_TUNE_JOB_NAME, fineTuneDelivery, type ApiEnv } from '@lorafleet/contracts';
import { AttemptsRepository, JobsRepository, OutboxRepository } from '@lorafleet/db';
import type { Queue } from 'bullmq';
import { API_ENV } from '../config/api-env.token';
import { FINE_TUNE_QUEUE } from '../infra/tokens';
import { BULLMQ_JOB_OPTIONS } from './outbox-relay.service';

/**
 * Rebuilds the queue from Postgres (R1): any job that Postgres says is `queued`, whose
 * outbox entry was dispatched, but which BullMQ no longer holds as waiting, delayed or
 * active (Redis lost its data, or a finished delivery still occupies the id) is enqueued again.
 */
@Injectable()
export class ReconcilerService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('Reconciler');
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<number> | undefined;

  constructor(
    private readonly jobs: JobsRepository,
    private readonly attempts: AttemptsRepository,
    private readonly outbox: OutboxRepository,
    @Inject(FINE_TUNE_QUEUE) private readonly queue: Queue,
    @Inject(API_ENV) private readonly env: ApiEnv,
  ) {}

  onApplicationBootstrap(): void {
    this.timer = setInterval(() => void this.reconcile(), this.env.LORAFLEET_RECONCILE_MS);
  }

  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.timer);
    await this.running?.catch(() => undefined);
  }

  /** One pass; returns how many jobs it re-enqueued. Overlapping calls share one pass. */
  reconcile(): Promise<number> {
    this.running ??= this.pass()
      .catch((error: unknown) => {
        this.logger.warn(`reconcile pass failed: ${String(error)}`);
        return 0;
      })
      .finally(() => (this.running = undefined));
    return this.running;
  }

  private async pass(): Promise<number> {
    // Give the relay a grace period before second-guessing a fresh job.
    const grace = Math.min(this.env.LORAFLEET_RECONCILE_MS, 5000);
    let repaired = 0;
    for (const jobId of await this.outbox.queuedWithoutPendingOutbox(grace, 500)) {
      const existing = await this.queue.getJob(jobId);
      const state = existing ? await existing.getState() : 'unknown';
      if (['waiting', 'delayed', 'active', 'prioritized', 'waiting-children'].includes(state))
        continue;
      if (existing) await existing.remove();
      const job = await this.jobs.findById(jobId);
      if (job?.status !== 'queued') continue;
      const { payload } = fineTuneDelivery(job);
      await this.queue.add(FINE_TUNE_JOB_NAME, payload, { ...BULLMQ_JOB_OPTIONS, jobId });
      repaired++;
      this.logger.warn(`re-enqueued job ${jobId} (BullMQ state was ${state})`);
    }
    repaired += await this.recoverOrphanedRunning();
    return repaired;
  }

  /**
   * A `running` job that BullMQ no longer holds as active has no live attempt anywhere (Redis
   * lost it, or its worker and the delivery both vanished): hand it back so it resumes from
   * its last checkpoint (R24). A live attempt would still be active in BullMQ.
   */
  private async recoverOrphanedRunning(): Promise<number> {
    let recovered = 0;
    for (const jobId of await this.attempts.staleRunning(
      this.env.LORAFLEET_RECONCILE_MS * 2,
      100,
    )) {
      const existing = await this.queue.getJob(jobId);
      const state = existing ? await existing.getState() : 'unknown';
      if (
        state === 'active' ||
        state === 'waiting' ||
        state === 'delayed' ||
        state === 'prioritized'
      )
        continue;
      if (existing) await existing.remove();
      const job = await this.jobs.findById(jobId);
      if (!job) continue;
      const requeued = await this.jobs.requeue(
        jobId,
        {
          from: ['running'],
          message:
            'No worker holds this running job any more; re-queued to resume from its last checkpoint',
          leaseToken: job.leaseToken ?? undefined,
          countFailure: true,
          eventData: { reason: 'orphaned' },
        },
        fineTuneDelivery(job),
      );
      if (requeued) {
        recovered++;
        this.logger.warn(`re-queued orphaned running job ${jobId} (BullMQ state was ${state})`);
      }
    }
    return recovered;
  }
}
