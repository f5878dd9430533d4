import type { QueueDelivery } from '@lorafleet/contracts';
import { IsNull, type DataSource, type EntityManager } from 'typeorm';
import { OutboxEntity } from '../entities';

/** A queue and its typed payload (contracts `fineTuneDelivery`), for one job. */
export type NewOutboxEntry = QueueDelivery & {
  jobId: string;
  /** BullMQ delay for the delivery (retry backoff). */
  delayMs?: number;
};

/**
 * Records a delivery inside the caller's transaction, so it exists exactly when the job
 * change that needs it commits (R1); the relay adds it to BullMQ afterwards.
 */
export async function insertOutboxEntry(
  manager: EntityManager,
  entry: NewOutboxEntry,
): Promise<void> {
  await manager.insert(OutboxEntity, { ...entry, delayMs: entry.delayMs ?? 0 });
}

/** Deliveries waiting for the relay, and the reconciler's check for lost ones (R1). */
export class OutboxRepository {
  constructor(private readonly dataSource: DataSource) {}

  /** Oldest undispatched entries first. */
  pending(limit: number): Promise<OutboxEntity[]> {
    return this.dataSource
      .getRepository(OutboxEntity)
      .find({ where: { dispatchedAt: IsNull() }, order: { id: 'ASC' }, take: limit });
  }

  async markDispatched(id: string): Promise<void> {
    await this.dataSource
      .getRepository(OutboxEntity)
      .update({ id, dispatchedAt: IsNull() }, { dispatchedAt: new Date() });
  }

  async recordFailure(id: string, error: string): Promise<void> {
    await this.dataSource
      .getRepository(OutboxEntity)
      .update({ id }, { attempts: () => 'attempts + 1', lastError: error.slice(0, 2000) });
  }

  /**
   * Queued jobs with no undispatched outbox entry, oldest first: candidates for the
   * reconciler to check against BullMQ (R1).
   */
  async queuedWithoutPendingOutbox(olderThanMs: number, limit: number): Promise<string[]> {
    const rows = await this.dataSource.query<{ id: string }[]>(
      `SELECT j.id FROM fine_tuning_jobs j
        WHERE j.status = 'queued'
          AND j.updated_at < now() - ($1::double precision * interval '1 millisecond')
          AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.job_id = j.id AND o.dispatched_at IS NULL)
        ORDER BY j.updated_at ASC
        LIMIT $2`,
      [olderThanMs, limit],
    );
    return rows.map((r) => r.id);
  }
}
