import {
  isLegalJobTransition,
  isTerminalJobStatus,
  type FineTuneSpec,
  type JobStatus,
  type Lineage,
  type QueueDelivery,
  type RequestedBackend,
} from '@lorafleet/contracts';
import { randomUUID } from 'node:crypto';
import type { DataSource, EntityManager } from 'typeorm';
import {
  AdapterEntity,
  CheckpointEntity,
  FileEntity,
  FineTuningJobEntity,
  JobEventEntity,
  OutboxEntity,
  type JobErrorRecord,
  type JobEventLevel,
  type JobEventType,
} from '../entities';
import type { JsonObject } from '../entities/json';
import { newId, sha256Hex } from '../ids';
import { pgPool } from '../pg-pool';
import { principalFromRow, type AuthenticatedPrincipal } from './tenants.repository';

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

export interface NewJobEvent {
  level?: JobEventLevel;
  type: JobEventType;
  message: string;
  data?: JsonObject | null;
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

export interface NewAdapter {
  adapterConfig: JsonObject;
  weights: Buffer;
  lineage: Lineage | null;
  fineTunedModel: string;
  trainedTokens: number;
  /** Final full-validation metrics. */
  finalMetrics?: Record<string, number>;
  /** Step metrics CSV, stored as a `fine-tune-results` file (OpenAI's `result_files`). */
  resultCsv?: string;
  /** Sample generations for a few validation prompts, recorded as an event. */
  samples?: { prompt: string; completion: string; reference: string }[];
  /**
   * Optimizer steps the run took. The job's progress is set to it (step = total_steps);
   * without it, to the last reported `total_steps`.
   */
  totalSteps?: number;
  /** What the attempt used, stored on the job (`usage`) and in a metrics event. */
  usage?: JobUsageRecord;
}

export interface JobUsageRecord {
  /** Peak resident memory of the trainer process, MiB; null where it cannot be read. */
  peakMemoryMb: number | null;
  tokensPerSecond: number | null;
}

interface JobColumn {
  property: string;
  column: string;
  alias: string;
}

interface HotJobRead {
  name: string;
  sql: string;
  columns: JobColumn[];
}

/**
 * A pg row → the entity, as TypeORM would hydrate it: pg already parses jsonb, timestamptz,
 * integer and double precision columns, and this entity has no transformers.
 */
function hydrateJob(row: Record<string, unknown>, columns: JobColumn[]): FineTuningJobEntity {
  const job = new FineTuningJobEntity();
  const target = job as unknown as Record<string, unknown>;
  for (const { property, alias } of columns) target[property] = row[alias];
  return job;
}

export interface JobListQuery {
  after?: string;
  limit: number;
  status?: JobStatus;
  metadata?: Record<string, string>;
}

/** Statuses that hold or wait for a worker slot: what the per-tenant quota counts (R21). */
const ACTIVE_STATUSES_SQL = "'validating_files', 'queued', 'running', 'paused'";

/** The tenant already has its maximum of unfinished jobs (R21). */
export class ActiveJobQuotaError extends Error {
  constructor(readonly limit: number) {
    super(`tenant already has ${limit} active fine-tuning jobs`);
    this.name = 'ActiveJobQuotaError';
  }
}

/** A completed job's step and total_steps: the run's step count, else the last reported total. */
const FINAL_STEP_SQL =
  'COALESCE(CAST(:totalSteps AS integer), progress_total_steps, progress_step)';

/** TypeORM returns `[rows, affected]` for UPDATE … RETURNING on Postgres, plain rows for SELECT. */
function returningRows<T>(result: unknown): T[] {
  if (
    Array.isArray(result) &&
    result.length === 2 &&
    Array.isArray(result[0]) &&
    typeof result[1] === 'number'
  ) {
    return result[0] as T[];
  }
  return result as T[];
}

/**
 * Every read and write of fine-tuning jobs. Status changes go through `transition`, which
 * checks DESIGN §4's table and writes exactly one status event in the same transaction.
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
        const [{ active }] = await manager.query<{ active: number }[]>(
          `SELECT count(*)::int AS active FROM fine_tuning_jobs
            WHERE tenant_id = $1 AND status IN (${ACTIVE_STATUSES_SQL})`,
          [job.tenantId],
        );
        if (active >= options.maxActiveJobs) throw new ActiveJobQuotaError(options.maxActiveJobs);
      }
      const id = newId('job');
      await manager.insert(FineTuningJobEntity, { ...job, id, status: 'queued' });
      await this.insertEvent(manager, id, {
        type: 'status',
        message: 'Validating training file',
        data: { status: 'validating_files' },
      });
      await this.insertEvent(manager, id, {
        type: 'status',
        message: 'Fine-tuning job queued',
        data: { status: 'queued', from: 'validating_files' },
      });
      await manager.insert(OutboxEntity, { jobId: id, ...deliveryFor(id) });
      return manager.findOneByOrFail(FineTuningJobEntity, { id });
    });
  }

  findById(id: string): Promise<FineTuningJobEntity | null> {
    return this.dataSource.getRepository(FineTuningJobEntity).findOneBy({ id });
  }

  /**
   * The hot path of `GET /v1/fine_tuning/jobs/{id}`: the API key check and the tenant-scoped
   * job read in one round trip, as a named prepared statement on the pg pool (no query
   * builder, no TypeORM hydration). Null when the key is unknown or revoked; `job` is null
   * when the key is good but the tenant has no such job. Nothing is cached: every call reads
   * the key and the row as Postgres has them now (R20, never staler than the database).
   */
  async findForApiKey(
    plaintextKey: string,
    id: string,
  ): Promise<{ principal: AuthenticatedPrincipal; job: FineTuningJobEntity | null } | null> {
    const read = this.hotJobRead();
    const { rows } = await pgPool(this.dataSource).query<Record<string, unknown>>({
      name: read.name,
      text: read.sql,
      values: [sha256Hex(plaintextKey), id],
    });
    if (rows.length === 0) return null;
    const row = rows[0];
    const principal = principalFromRow({
      tenant_id: row.__key_tenant_id as string,
      id: row.__key_id as string,
      is_admin: row.__key_is_admin as boolean,
      is_fleet_admin: row.__key_is_fleet_admin as boolean,
    });
    if (row.__job_found !== true) return { principal, job: null };
    return { principal, job: hydrateJob(row, read.columns) };
  }

  private jobColumnsCache?: { columns: JobColumn[]; select: string };

  /**
   * The job columns for plain SQL reads, from the entity metadata: explicit columns (never
   * `j.*`), so a column added by a later migration cannot change a prepared statement's
   * result type under a running API.
   */
  private jobColumns(): { columns: JobColumn[]; select: string } {
    if (!this.jobColumnsCache) {
      const columns = this.dataSource.getMetadata(FineTuningJobEntity).columns.map((column, i) => ({
        property: column.propertyName,
        column: column.databaseName,
        alias: `c${i}`,
      }));
      const select = columns.map((c) => `j."${c.column}" AS ${c.alias}`).join(', ');
      this.jobColumnsCache = { columns, select };
    }
    return this.jobColumnsCache;
  }

  private hotJobReadCache?: HotJobRead;

  /** SQL and column map of `findForApiKey`; the name carries a hash of the SQL. */
  private hotJobRead(): HotJobRead {
    if (this.hotJobReadCache) return this.hotJobReadCache;
    const { columns, select } = this.jobColumns();
    const sql = `SELECT k.tenant_id AS __key_tenant_id, k.id AS __key_id, k.is_admin AS __key_is_admin,
            k.is_fleet_admin AS __key_is_fleet_admin, j.id IS NOT NULL AS __job_found, ${select}
       FROM api_keys k
       LEFT JOIN fine_tuning_jobs j ON j.id = $2 AND j.tenant_id = k.tenant_id
      WHERE k.key_hash = $1 AND k.revoked_at IS NULL`;
    this.hotJobReadCache = {
      name: `lorafleet_job_for_key_${sha256Hex(sql).slice(0, 12)}`,
      sql,
      columns,
    };
    return this.hotJobReadCache;
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
   * Plain prepared SQL on the pg pool like `findForApiKey` (dashboards and clients poll this
   * page): one statement per filter shape, rows mapped straight onto the entity.
   */
  async listForTenant(tenantId: string, query: JobListQuery): Promise<FineTuningJobEntity[]> {
    const { columns, select } = this.jobColumns();
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
    const { rows } = await pgPool(this.dataSource).query<Record<string, unknown>>({
      name: `lorafleet_list_jobs_${sha256Hex(sql).slice(0, 12)}`,
      text: sql,
      values,
    });
    return rows.map((row) => hydrateJob(row, columns));
  }

  /**
   * A job's events, newest first, each with `seq`: its ordinal among the job's events (1 =
   * the first). Clients see `seq`, never the global `id`, which would reveal the whole
   * system's event rate to every tenant. `after` is the `seq` of the last event of the
   * previous page. Counting happens per read over the job's own events (index
   * `idx_job_events_job_id_id`), so no writer needs to know about it.
   */
  async listEvents(
    jobId: string,
    after: number | undefined,
    limit: number,
  ): Promise<(JobEventEntity & { seq: number })[]> {
    const rows = await this.dataSource.query<
      {
        id: string;
        job_id: string;
        level: JobEventLevel;
        type: JobEventType;
        message: string;
        data: JsonObject | null;
        created_at: Date;
        seq: string;
      }[]
    >(
      `SELECT * FROM (
         SELECT e.id, e.job_id, e.level, e.type, e.message, e.data, e.created_at,
                row_number() OVER (ORDER BY e.id) AS seq
           FROM job_events e WHERE e.job_id = $1) s
        WHERE $2::bigint IS NULL OR s.seq < $2::bigint
        ORDER BY s.seq DESC LIMIT $3`,
      [jobId, after ?? null, limit],
    );
    return rows.map((row) => {
      const event = new JobEventEntity();
      Object.assign(event, {
        id: row.id,
        jobId: row.job_id,
        level: row.level,
        type: row.type,
        message: row.message,
        data: row.data,
        createdAt: row.created_at,
      });
      return Object.assign(event, { seq: Number(row.seq) });
    });
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
      const qb = manager
        .createQueryBuilder()
        .update(FineTuningJobEntity)
        .set({
          ...request.set,
          status: request.to,
          ...(isTerminalJobStatus(request.to) ? { finishedAt: () => 'now()' } : {}),
        })
        .where('id = :jobId AND status IN (:...from)', { jobId, from: request.from });
      if (request.leaseToken) qb.andWhere('lease_token = :lease', { lease: request.leaseToken });
      const previous = await manager.query<{ status: JobStatus }[]>(
        'SELECT status FROM fine_tuning_jobs WHERE id = $1 FOR UPDATE',
        [jobId],
      );
      const result = await qb.execute();
      if ((result.affected ?? 0) === 0) return false;
      await this.insertEvent(manager, jobId, {
        type: 'status',
        level: request.to === 'failed' ? 'error' : 'info',
        message: request.message,
        data: { ...request.eventData, status: request.to, from: previous[0]?.status ?? null },
      });
      return true;
    });
  }

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
        await this.insertEvent(manager, jobId, {
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
        await this.insertEvent(manager, jobId, {
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
      .createQueryBuilder()
      .update(FineTuningJobEntity)
      .set({ backend })
      .where('id = :jobId AND lease_token = :leaseToken', { jobId, leaseToken })
      .execute();
    return (result.affected ?? 0) > 0;
  }

  /**
   * Stores a trainer checkpoint for the current attempt and prunes older ones to `keep`,
   * in one transaction; stores nothing when the attempt is stale (R5, R7).
   */
  async saveCheckpoint(
    jobId: string,
    leaseToken: string,
    checkpoint: {
      attempt: number;
      step: number;
      metrics: Record<string, number> | null;
      blob: Buffer;
    },
    keep: number,
  ): Promise<string | null> {
    return this.dataSource.transaction(async (manager) => {
      const locked = await manager.query<{ id: string }[]>(
        "SELECT id FROM fine_tuning_jobs WHERE id = $1 AND lease_token = $2 AND status = 'running' FOR UPDATE",
        [jobId, leaseToken],
      );
      if (locked.length === 0) return null;
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
    return this.dataSource
      .getRepository(CheckpointEntity)
      .createQueryBuilder('c')
      .addSelect('c.blob')
      .where('c.job_id = :jobId', { jobId })
      .orderBy('c.step', 'DESC')
      .addOrderBy('c.created_at', 'DESC')
      .getOne();
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
    const result = await this.dataSource
      .createQueryBuilder()
      .update(FineTuningJobEntity)
      .set({
        progressStep: progress.step,
        progressTotalSteps: progress.totalSteps,
        progressEpoch: progress.epoch,
        estimatedFinish: progress.estimatedFinish,
      })
      .where("id = :jobId AND lease_token = :leaseToken AND status = 'running'", {
        jobId,
        leaseToken,
      })
      .execute();
    return (result.affected ?? 0) > 0;
  }

  /** Fenced event append: inserts nothing when the attempt is stale. */
  async appendFencedEvent(jobId: string, leaseToken: string, event: NewJobEvent): Promise<boolean> {
    const rows = await this.dataSource.query<unknown[]>(
      `INSERT INTO job_events (job_id, level, type, message, data)
       SELECT $1, $3, $4, $5, $6::jsonb
        WHERE EXISTS (SELECT 1 FROM fine_tuning_jobs WHERE id = $1 AND lease_token = $2)
       RETURNING id`,
      [
        jobId,
        leaseToken,
        event.level ?? 'info',
        event.type,
        event.message,
        JSON.stringify(event.data ?? null),
      ],
    );
    return rows.length > 0;
  }

  /**
   * Stores the adapter and marks the job succeeded in one transaction, fenced by the lease.
   * A stale attempt rolls back and stores nothing; the unique job_id index makes a second
   * adapter for one job impossible even under a fencing bug.
   */
  async completeWithAdapter(
    jobId: string,
    leaseToken: string,
    adapter: NewAdapter,
  ): Promise<AdapterEntity | null> {
    return this.dataSource.transaction(async (manager) => {
      const locked = await manager.query<{ tenant_id: string; model: string }[]>(
        `SELECT tenant_id, model FROM fine_tuning_jobs
          WHERE id = $1 AND lease_token = $2 AND status = 'running' FOR UPDATE`,
        [jobId, leaseToken],
      );
      if (locked.length === 0) return null;
      const adapterId = newId('adapter');
      await manager.insert(AdapterEntity, {
        id: adapterId,
        jobId,
        tenantId: locked[0].tenant_id,
        baseModel: locked[0].model,
        fineTunedModel: adapter.fineTunedModel,
        adapterConfig: adapter.adapterConfig,
        weights: adapter.weights,
        weightsSha256: sha256Hex(adapter.weights),
        lineage: adapter.lineage,
      });
      const resultFiles: string[] = [];
      if (adapter.resultCsv !== undefined) {
        const content = Buffer.from(adapter.resultCsv);
        const fileId = newId('file');
        await manager.insert(FileEntity, {
          id: fileId,
          tenantId: locked[0].tenant_id,
          filename: 'step_metrics.csv',
          purpose: 'fine-tune-results',
          bytes: content.byteLength,
          sha256: sha256Hex(content),
          content,
          status: 'processed',
          statusDetails: null,
          exampleCount: 0,
        });
        resultFiles.push(fileId);
      }
      // A succeeded job shows its whole run: step = total_steps. The worker's progress writes
      // are fire-and-forget, so the last one may still be in flight (and will then be fenced
      // out by the lease and status below); completion does not depend on it.
      const totalSteps = adapter.totalSteps ?? null;
      await manager
        .createQueryBuilder()
        .update(FineTuningJobEntity)
        .set({
          status: 'succeeded',
          adapterId,
          fineTunedModel: adapter.fineTunedModel,
          trainedTokens: adapter.trainedTokens,
          lineage: adapter.lineage,
          finalMetrics: adapter.finalMetrics ?? null,
          resultFiles,
          leaseToken: null,
          finishedAt: () => 'now()',
          progressTotalSteps: () => FINAL_STEP_SQL,
          progressStep: () => FINAL_STEP_SQL,
          ...(adapter.usage
            ? {
                peakMemoryMb: adapter.usage.peakMemoryMb,
                tokensPerSecond: adapter.usage.tokensPerSecond,
              }
            : {}),
        })
        .where('id = :jobId', { jobId })
        .setParameter('totalSteps', totalSteps)
        .execute();
      if (adapter.finalMetrics || adapter.samples?.length) {
        await this.insertEvent(manager, jobId, {
          type: 'metrics',
          message: 'Final validation metrics and sample generations',
          data: { final: true, ...adapter.finalMetrics, samples: adapter.samples ?? [] },
        });
      }
      if (adapter.usage) {
        const { peakMemoryMb, tokensPerSecond } = adapter.usage;
        await this.insertEvent(manager, jobId, {
          type: 'metrics',
          message: `Usage: peak memory ${peakMemoryMb === null ? 'unknown' : `${peakMemoryMb} MiB`}, ${tokensPerSecond === null ? '?' : Math.round(tokensPerSecond)} tokens/s`,
          data: { usage: true, peak_memory_mb: peakMemoryMb, tokens_per_second: tokensPerSecond },
        });
      }
      await this.insertEvent(manager, jobId, {
        type: 'status',
        message: `Fine-tuning job succeeded: ${adapter.fineTunedModel}`,
        data: { status: 'succeeded', from: 'running', adapter_id: adapterId },
      });
      return manager.findOneByOrFail(AdapterEntity, { id: adapterId });
    });
  }

  /**
   * Moves a job back to `queued` and writes a new outbox entry in the same transaction, so
   * the relay delivers it again (resume, hand-back, retry). Fenced when `leaseToken` is set.
   */
  async requeue(
    jobId: string,
    request: {
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
    },
    delivery: QueueDelivery,
  ): Promise<boolean> {
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
      await this.insertEvent(manager, jobId, {
        type: 'status',
        message: request.message,
        data: { ...request.eventData, status: 'queued', from: updated[0].status },
      });
      await manager.insert(OutboxEntity, { jobId, ...delivery, delayMs: request.delayMs ?? 0 });
      return true;
    });
  }

  /** The memory a hand-back recorded for this job (MiB), or null when none did. */
  async memoryRequiredMb(jobId: string): Promise<number | null> {
    const rows = await this.dataSource.query<{ memory_required_mb: number | null }[]>(
      'SELECT memory_required_mb FROM fine_tuning_jobs WHERE id = $1',
      [jobId],
    );
    return rows[0]?.memory_required_mb ?? null;
  }

  /** Asks the running attempt to checkpoint and stop; the worker completes the pause. */
  async requestPause(jobId: string): Promise<boolean> {
    const result = await this.dataSource
      .createQueryBuilder()
      .update(FineTuningJobEntity)
      .set({ pauseRequestedAt: () => 'now()' })
      .where("id = :jobId AND status = 'running'", { jobId })
      .execute();
    return (result.affected ?? 0) > 0;
  }

  /** Jobs that hold or wait for a worker slot (quota R21). */
  countActiveForTenant(tenantId: string): Promise<number> {
    return this.dataSource
      .getRepository(FineTuningJobEntity)
      .createQueryBuilder('j')
      .where(`j.tenant_id = :tenantId AND j.status IN (${ACTIVE_STATUSES_SQL})`, { tenantId })
      .getCount();
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

  listCheckpoints(jobId: string, limit: number): Promise<CheckpointEntity[]> {
    return this.dataSource
      .getRepository(CheckpointEntity)
      .find({ where: { jobId }, order: { step: 'DESC', createdAt: 'DESC' }, take: limit });
  }

  private async insertEvent(
    manager: EntityManager,
    jobId: string,
    event: NewJobEvent,
  ): Promise<void> {
    // Raw SQL: TypeORM's deep-partial typing cannot cope with recursive JSON types.
    await manager.query(
      'INSERT INTO job_events (job_id, level, type, message, data) VALUES ($1, $2, $3, $4, $5::jsonb)',
      [jobId, event.level ?? 'info', event.type, event.message, JSON.stringify(event.data ?? null)],
    );
  }
}

export type { JobErrorRecord };
