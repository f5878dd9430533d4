import type { DataSource, EntityManager } from 'typeorm';
import { JobEventEntity, type JobEventLevel, type JobEventType } from '../entities';
import type { JsonObject } from '../entities/json';
import { preparedQuery } from '../pg-pool';

export interface NewJobEvent {
  level?: JobEventLevel;
  type: JobEventType;
  message: string;
  data?: JsonObject | null;
}

/**
 * Appends one event inside the caller's transaction: every status change, claim and
 * completion writes its event together with the row it describes.
 */
export async function insertJobEvent(
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

/** A job's event log: the events page, and the worker's fenced appends. */
export class JobEventsRepository {
  constructor(private readonly dataSource: DataSource) {}

  /**
   * A job's events, newest first, each with `seq`: its ordinal among the job's events (1 =
   * the first). Clients see `seq`, never the global `id`, which would reveal the whole
   * system's event rate to every tenant. `after` is the `seq` of the last event of the
   * previous page. Counting happens per read over the job's own events (index
   * `idx_job_events_job_id_id`), so no writer needs to know about it. A hot read: clients
   * and the dashboard poll it while a job runs.
   */
  async listEvents(
    jobId: string,
    after: number | undefined,
    limit: number,
  ): Promise<(JobEventEntity & { seq: number })[]> {
    const rows = await preparedQuery<{
      id: string;
      job_id: string;
      level: JobEventLevel;
      type: JobEventType;
      message: string;
      data: JsonObject | null;
      created_at: Date;
      seq: string;
    }>(
      this.dataSource,
      'list_job_events',
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
}
