import type { JobStatus, RequestedBackend } from '@lorafleet/contracts';
import { randomUUID } from 'node:crypto';
import type { DataSource, EntityManager } from 'typeorm';
import { FineTuningJobEntity } from '../entities';
import { insertJobEvent } from './job-events.repository';
import { returningRows } from './job-rows';

export interface ClaimedAttempt {
  job: FineTuningJobEntity;
  leaseToken: string;
  attempt: number;
  /** True when this attempt replaced a presumed-dead running attempt. */
  takeover: boolean;
}

export interface JobProgressUpdate {
  step: number;
  totalSteps: number | null;
  epoch: number | null;
  estimatedFinish: Date | null;
}

/** The columns of a leased job that fenced writes need. */
export interface LeasedJob {
  tenant_id: string;
  model: string;
}

/**
 * Locks the job row for the rest of the caller's transaction if, and only if, it is
 * `running` under `leaseToken`; null when the attempt is stale (R7). Every fenced write that
 * stores more than one row (checkpoint, adapter) starts with it.
 */
export async function lockLeasedJob(
  manager: EntityManager,
  jobId: string,
  leaseToken: string,
): Promise<LeasedJob | null> {
  const locked = await manager.query<LeasedJob[]>(
    `SELECT tenant_id, model FROM fine_tuning_jobs
      WHERE id = $1 AND lease_token = $2 AND status = 'running' FOR UPDATE`,
    [jobId, leaseToken],
  );
  return locked[0] ?? null;
}

/**
 * A job's attempts and their leases: the claim that starts an attempt and the fenced writes
 * it makes while it runs. Every write here filters on the lease token (R7).
 */
export class AttemptsRepository {
  constructor(private readonly dataSource: DataSource) {}

  /**
   * Starts a new attempt: bumps `attempt`, issues a fresh lease token and moves the job to
   * `running`. Any earlier attempt's token stops matching at once (R7).
   *
   * A `running` job is taken over only when `takeover` is set: BullMQ redelivers an active
   * job only after its holder stopped renewing the lock (crash, SIGKILL, frozen process), so
   * the previous attempt is presumed dead; its token is revoked and the takeover counts as a
   * failure toward the retry budget.
   */
  async claimAttempt(
    jobId: string,
    workerId: string,
    requestedBackend: RequestedBackend,
    options: { takeover?: boolean } = {},
  ): Promise<ClaimedAttempt | null> {
    const leaseToken = randomUUID();
    const claimed = await this.dataSource.transaction(async (manager) => {
      const previous = await manager.query<{ status: JobStatus; worker_id: string | null }[]>(
        'SELECT status, worker_id FROM fine_tuning_jobs WHERE id = $1 FOR UPDATE',
        [jobId],
      );
      const from = previous[0]?.status;
      if (from !== 'queued' && !(from === 'running' && options.takeover)) return null;
      const result = await manager.query<unknown>(
        `UPDATE fine_tuning_jobs
            SET status = 'running', attempt = attempt + 1, lease_token = $2, worker_id = $3,
                requested_backend = $4, backend = NULL, started_at = COALESCE(started_at, now()), updated_at = now(),
                failures = failures + $5
          WHERE id = $1
          RETURNING attempt, failures`,
        [jobId, leaseToken, workerId, requestedBackend, from === 'running' ? 1 : 0],
      );
      const [row] = returningRows<{ attempt: number; failures: number }>(result);
      if (from === 'running') {
        await insertJobEvent(manager, jobId, {
          type: 'message',
          level: 'warn',
          message: `Attempt ${row.attempt} on ${workerId} took over from ${previous[0].worker_id ?? 'an unknown worker'}, which stopped responding`,
          data: {
            attempt: row.attempt,
            worker: workerId,
            previous_worker: previous[0].worker_id,
            takeover: true,
          },
        });
      } else {
        await insertJobEvent(manager, jobId, {
          type: 'status',
          message: `Fine-tuning job started (attempt ${row.attempt}) on ${workerId} using ${requestedBackend}`,
          data: {
            status: 'running',
            from: 'queued',
            attempt: row.attempt,
            worker: workerId,
            backend: requestedBackend,
          },
        });
      }
      return { attempt: row.attempt, takeover: from === 'running' };
    });
    if (claimed === null) return null;
    const job = await this.dataSource
      .getRepository(FineTuningJobEntity)
      .findOneByOrFail({ id: jobId });
    return { job, leaseToken, attempt: claimed.attempt, takeover: claimed.takeover };
  }

  /** Records the attempt's backend once the trainer has initialised it (fenced). */
  async recordBackend(jobId: string, leaseToken: string, backend: string): Promise<boolean> {
    const result = await this.dataSource
      .getRepository(FineTuningJobEntity)
      .update({ id: jobId, leaseToken }, { backend });
    return (result.affected ?? 0) > 0;
  }

  /**
   * Fenced progress write; false when the attempt is stale. Only a `running` job holding this
   * lease changes, so a write that lands after completion (the worker sends them without
   * waiting) cannot move a finished job's progress.
   */
  async updateProgress(
    jobId: string,
    leaseToken: string,
    progress: JobProgressUpdate,
  ): Promise<boolean> {
    const result = await this.dataSource.getRepository(FineTuningJobEntity).update(
      { id: jobId, leaseToken, status: 'running' },
      {
        progressStep: progress.step,
        progressTotalSteps: progress.totalSteps,
        progressEpoch: progress.epoch,
        estimatedFinish: progress.estimatedFinish,
      },
    );
    return (result.affected ?? 0) > 0;
  }

  /** The memory a hand-back recorded for this job (MiB), or null when none did. */
  async memoryRequiredMb(jobId: string): Promise<number | null> {
    const row = await this.dataSource
      .getRepository(FineTuningJobEntity)
      .findOne({ select: { id: true, memoryRequiredMb: true }, where: { id: jobId } });
    return row?.memoryRequiredMb ?? null;
  }

  /**
   * Running jobs whose row has not changed for `staleMs` (no progress, no heartbeat of the
   * attempt): candidates for the reconciler when BullMQ no longer holds them (R24).
   */
  async staleRunning(staleMs: number, limit: number): Promise<string[]> {
    const rows = await this.dataSource.query<{ id: string }[]>(
      `SELECT id FROM fine_tuning_jobs
        WHERE status = 'running'
          AND updated_at < now() - ($1::double precision * interval '1 millisecond')
        ORDER BY updated_at ASC LIMIT $2`,
      [staleMs, limit],
    );
    return rows.map((r) => r.id);
  }
}
