import type { DataSource, FindOptionsSelect } from 'typeorm';
import { CheckpointEntity } from '../entities';
import { newId } from '../ids';
import { lockLeasedJob } from './attempts.repository';

export interface NewCheckpoint {
  attempt: number;
  step: number;
  metrics: Record<string, number> | null;
  blob: Buffer;
}

/** Trainer checkpoints: written fenced by the running attempt, read to resume (R5, R6). */
export class CheckpointsRepository {
  constructor(private readonly dataSource: DataSource) {}

  /**
   * Stores a trainer checkpoint for the current attempt and prunes older ones to `keep`,
   * in one transaction; stores nothing when the attempt is stale (R5, R7).
   */
  async saveCheckpoint(
    jobId: string,
    leaseToken: string,
    checkpoint: NewCheckpoint,
    keep: number,
  ): Promise<string | null> {
    return this.dataSource.transaction(async (manager) => {
      if ((await lockLeasedJob(manager, jobId, leaseToken)) === null) return null;
      const id = newId('checkpoint');
      await manager.insert(CheckpointEntity, {
        id,
        jobId,
        attempt: checkpoint.attempt,
        step: checkpoint.step,
        metrics: checkpoint.metrics,
        blob: checkpoint.blob,
        bytes: checkpoint.blob.byteLength,
      });
      await manager.query(
        `DELETE FROM checkpoints WHERE job_id = $1 AND id NOT IN (
           SELECT id FROM checkpoints WHERE job_id = $1 ORDER BY step DESC, created_at DESC LIMIT $2)`,
        [jobId, keep],
      );
      return id;
    });
  }

  /** The newest checkpoint with its blob, to resume from. */
  latestCheckpoint(jobId: string): Promise<CheckpointEntity | null> {
    // Every column, the blob (not selected by default) included.
    const select = Object.fromEntries(
      this.dataSource.getMetadata(CheckpointEntity).columns.map((c) => [c.propertyName, true]),
    ) as FindOptionsSelect<CheckpointEntity>;
    return this.dataSource.getRepository(CheckpointEntity).findOne({
      select,
      where: { jobId },
      order: { step: 'DESC', createdAt: 'DESC' },
    });
  }

  /** Newest first, without blobs. */
  listCheckpoints(jobId: string, limit: number): Promise<CheckpointEntity[]> {
    return this.dataSource
      .getRepository(CheckpointEntity)
      .find({ where: { jobId }, order: { step: 'DESC', createdAt: 'DESC' }, take: limit });
  }
}
