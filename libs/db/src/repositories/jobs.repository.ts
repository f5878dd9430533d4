import {
  isLegalJobTransition,
  isTerminalJobStatus,
  type JobStatus,
  type FineTuneSpec,
  type QueueDelivery,
} from '@lorafleet/contracts';
import { In, type DataSource } from 'typeorm';
import { FineTuningJobEntity } from '../entities';
import type { JsonObject } from '../entities/json';
import { newId } from '../ids';
import { preparedQuery } from '../pg-pool';
import { insertJobEvent } from './job-events.repository';
import { hydrateJob, jobSelect, returningRows } from './job-rows';
import { insertOutboxEntry } from './outbox.repository';
import { insertJobWebhookEvent } from './webhooks.repository';

export interface NewJob {
  tenantId: string;
  model: string;
  /** Content hash of the base model at creation; the worker verifies it before training. */
  baseModelHash: string | null;
  trainingFileId: string;
  validationFileId: string | null;
  suffix: string | null;
  metadata: Record<string, string> | null;
  spec: FineTuneSpec;
  idempotencyKey: string | null;
  requestHash: string | null;
}

export interface TransitionRequest {
  /** Statuses the job may be in now; each must legally lead to `to`. */
  from: readonly JobStatus[];
  to: JobStatus;
  message: string;
  /** When set, the update only applies to the attempt holding this lease (R7). */
  leaseToken?: string;
  /** Extra columns to set together with the status. */
  set?: Partial<
    Pick<
      FineTuningJobEntity,
      | 'error'
      | 'fineTunedModel'
      | 'adapterId'
      | 'trainedTokens'
      | 'leaseToken'
      | 'workerId'
      | 'backend'
      | 'cancelRequestedAt'
      | 'pauseRequestedAt'
      | 'lineage'
      | 'failures'
    >
  >;
  eventData?: JsonObject;
}

export interface RequeueRequest {
  from: readonly JobStatus[];
  message: string;
  leaseToken?: string;
  eventData?: JsonObject;
  /** Retry after a failure: counts toward the retry budget (R13). */
  countFailure?: boolean;
  /** BullMQ delay for the new delivery (retry backoff). */
  delayMs?: number;
  /**
   * Hand-back of a job too big for this worker: the memory it needs (MiB) is recorded, so
   * workers with a lower limit pass it on instead of claiming it again.
   */
  memoryRequiredMb?: number;
}

export interface JobListQuery {
  after?: string;
  limit: number;
  status?: JobStatus;
  metadata?: Record<string, string>;
}

/** Statuses that hold or wait for a worker slot: what the per-tenant quota counts (R21). */
const ACTIVE_STATUSES: readonly JobStatus[] = ['validating_files', 'queued', 'running', 'paused'];

/** The tenant already has its maximum of unfinished jobs (R21). */
export class ActiveJobQuotaError extends Error {
  constructor(readonly limit: number) {
    super(`tenant already has ${limit} active fine-tuning jobs`);
    this.name = 'ActiveJobQuotaError';
  }
}

/**
 * Fine-tuning jobs: creation, reads and status changes. Status changes go through
 * `transition` (or `requeue`), which checks DESIGN §4's table and writes exactly one status
 * event in the same transaction. An attempt's fenced writes are `AttemptsRepository`'s.
 */
export class JobsRepository {
  constructor(private readonly dataSource: DataSource) {}

  /**
   * Job row, its `validating_files` event and its outbox entry, atomically (R1). With
   * `maxActiveJobs`, the tenant's row is locked first and its unfinished jobs counted in the
   * same transaction (R21): concurrent creates of one tenant queue on that lock, in this
   * process or any other API process, so the quota cannot be overrun. Throws
   * `ActiveJobQuotaError` when the tenant is at the limit.
   */
  async createWithOutbox(
    job: NewJob,
    deliveryFor: (jobId: string) => QueueDelivery,
    options: { maxActiveJobs?: number } = {},
  ): Promise<FineTuningJobEntity> {
    return this.dataSource.transaction(async (manager) => {
      if (options.maxActiveJobs !== undefined) {
        await manager.query('SELECT id FROM tenants WHERE id = $1 FOR UPDATE', [job.tenantId]);
        // READ COMMITTED: this statement's snapshot starts after the lock was granted, so it
        // sees every job the previous lock holder committed.
        const active = await manager.countBy(FineTuningJobEntity, {
          tenantId: job.tenantId,
          status: In(ACTIVE_STATUSES),
        });
        if (active >= options.maxActiveJobs) throw new ActiveJobQuotaError(options.maxActiveJobs);
      }
      const id = newId('job');
      await manager.insert(FineTuningJobEntity, { ...job, id, status: 'queued' });
      await insertJobEvent(manager, id, {
        type: 'status',
        message: 'Validating training file',
        data: { status: 'validating_files' },
      });
      await insertJobEvent(manager, id, {
        type: 'status',
        message: 'Fine-tuning job queued',
        data: { status: 'queued', from: 'validating_files' },
      });
      await insertOutboxEntry(manager, { jobId: id, ...deliveryFor(id) });
      return manager.findOneByOrFail(FineTuningJobEntity, { id });
    });
  }

  findById(id: string): Promise<FineTuningJobEntity | null> {
    return this.dataSource.getRepository(FineTuningJobEntity).findOneBy({ id });
  }

  findForTenant(tenantId: string, id: string): Promise<FineTuningJobEntity | null> {
    return this.dataSource.getRepository(FineTuningJobEntity).findOneBy({ tenantId, id });
  }

  findByIdempotencyKey(tenantId: string, key: string): Promise<FineTuningJobEntity | null> {
    return this.dataSource
      .getRepository(FineTuningJobEntity)
      .findOneBy({ tenantId, idempotencyKey: key });
  }

  /**
   * Newest first; `after` is the id of the last job on the previous page (OpenAI cursor).
   * A hot read (dashboards and clients poll this page): one prepared statement per filter
   * shape, rows mapped straight onto the entity.
   */
  async listForTenant(tenantId: string, query: JobListQuery): Promise<FineTuningJobEntity[]> {
    const { columns, select } = jobSelect(this.dataSource);
    const values: unknown[] = [tenantId];
    const where = ['j.tenant_id = $1'];
    if (query.status) {
      values.push(query.status);
      where.push(`j.status = $${values.length}`);
    }
    if (query.metadata && Object.keys(query.metadata).length > 0) {
      values.push(JSON.stringify(query.metadata));
      where.push(`j.metadata @> $${values.length}::jsonb`);
    }
    if (query.after) {
      values.push(query.after);
      where.push(
        `(j.created_at, j.id) < (SELECT a.created_at, a.id FROM fine_tuning_jobs a WHERE a.id = $${values.length} AND a.tenant_id = $1)`,
      );
    }
    values.push(query.limit);
    const sql = `SELECT ${select} FROM fine_tuning_jobs j WHERE ${where.join(' AND ')}
      ORDER BY j.created_at DESC, j.id DESC LIMIT $${values.length}`;
    const rows = await preparedQuery<Record<string, unknown>>(
      this.dataSource,
      'list_jobs',
      sql,
      values,
    );
    return rows.map((row) => hydrateJob(row, columns));
  }

  /** Jobs that hold or wait for a worker slot (quota R21). */
  countActiveForTenant(tenantId: string): Promise<number> {
    return this.dataSource
      .getRepository(FineTuningJobEntity)
      .countBy({ tenantId, status: In(ACTIVE_STATUSES) });
  }

  /**
   * Moves a job to `to` if it is in one of `from` (and, when given, still leased by
   * `leaseToken`), and writes one status event. Returns false when nothing matched: the job
   * moved on, or the caller's attempt is stale.
   */
  async transition(jobId: string, request: TransitionRequest): Promise<boolean> {
    for (const from of request.from) {
      if (!isLegalJobTransition(from, request.to)) {
        throw new Error(`illegal job transition ${from} → ${request.to}`);
      }
    }
    return this.dataSource.transaction(async (manager) => {
      const previous = await manager.query<{ status: JobStatus }[]>(
        'SELECT status FROM fine_tuning_jobs WHERE id = $1 FOR UPDATE',
        [jobId],
      );
      const result = await manager.update(
        FineTuningJobEntity,
        {
          id: jobId,
          status: In(request.from),
          ...(request.leaseToken ? { leaseToken: request.leaseToken } : {}),
        },
        {
          ...request.set,
          status: request.to,
          ...(isTerminalJobStatus(request.to) ? { finishedAt: () => 'now()' } : {}),
        },
      );
      if ((result.affected ?? 0) === 0) return false;
      await insertJobEvent(manager, jobId, {
        type: 'status',
        level: request.to === 'failed' ? 'error' : 'info',
        message: request.message,
        data: { ...request.eventData, status: request.to, from: previous[0]?.status ?? null },
      });
      // Terminal statuses emit a webhook event in this same transaction (issue 20).
      await insertJobWebhookEvent(manager, jobId, request.to);
      return true;
    });
  }

  /**
   * Moves a job back to `queued` and writes a new outbox entry in the same transaction, so
   * the relay delivers it again (resume, hand-back, retry). Fenced when `leaseToken` is set.
   */
  async requeue(jobId: string, request: RequeueRequest, delivery: QueueDelivery): Promise<boolean> {
    for (const from of request.from) {
      if (!isLegalJobTransition(from, 'queued'))
        throw new Error(`illegal job transition ${from} → queued`);
    }
    return this.dataSource.transaction(async (manager) => {
      const params: unknown[] = [jobId, request.from, request.memoryRequiredMb ?? null];
      let fence = '';
      if (request.leaseToken) {
        params.push(request.leaseToken);
        fence = ' AND lease_token = $4';
      }
      const result = await manager.query<unknown>(
        `UPDATE fine_tuning_jobs j SET status = 'queued', lease_token = NULL, worker_id = NULL,
                pause_requested_at = NULL, updated_at = now(),
                failures = failures + ${request.countFailure ? 1 : 0},
                memory_required_mb = GREATEST(memory_required_mb, $3::integer)
           FROM (SELECT id, status FROM fine_tuning_jobs WHERE id = $1 FOR UPDATE) prev
          WHERE j.id = prev.id AND j.status = ANY($2)${fence}
          RETURNING prev.status`,
        params,
      );
      const updated = returningRows<{ status: JobStatus }>(result);
      if (updated.length === 0) return false;
      await insertJobEvent(manager, jobId, {
        type: 'status',
        message: request.message,
        data: { ...request.eventData, status: 'queued', from: updated[0].status },
      });
      await insertOutboxEntry(manager, { jobId, ...delivery, delayMs: request.delayMs });
      return true;
    });
  }

  /** Asks the running attempt to checkpoint and stop; the worker completes the pause. */
  async requestPause(jobId: string): Promise<boolean> {
    const result = await this.dataSource
      .getRepository(FineTuningJobEntity)
      .update({ id: jobId, status: 'running' }, { pauseRequestedAt: () => 'now()' });
    return (result.affected ?? 0) > 0;
  }
}
