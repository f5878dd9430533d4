import type { DataSource } from 'typeorm';
import { WorkerEntity, type WorkerStatus } from '../entities';

export interface WorkerRegistration {
  id: string;
  host: string;
  pid: number;
  backend: string;
  device: string | null;
  versions: Record<string, string> | null;
  /** The trainer's memory budget, MiB (LORAFLEET_MEMORY_LIMIT_MB or its default). */
  memoryLimitMb: number | null;
}

export class WorkersRepository {
  constructor(private readonly dataSource: DataSource) {}

  async register(worker: WorkerRegistration): Promise<void> {
    const now = new Date();
    await this.dataSource
      .getRepository(WorkerEntity)
      .upsert(
        { ...worker, status: 'idle', currentJobId: null, startedAt: now, lastHeartbeatAt: now },
        ['id'],
      );
  }

  async heartbeat(id: string, status: WorkerStatus, currentJobId: string | null): Promise<void> {
    await this.dataSource
      .getRepository(WorkerEntity)
      .update({ id }, { status, currentJobId, lastHeartbeatAt: new Date() });
  }

  list(): Promise<WorkerEntity[]> {
    return this.dataSource.getRepository(WorkerEntity).find({ order: { startedAt: 'DESC' } });
  }

  /**
   * Ids of other workers heard from within `heardWithinMs` and not shutting down whose memory
   * limit is at least `memoryMb`, largest limit first: where a job too big for this worker can
   * still run.
   */
  async liveWithMemoryAtLeast(
    memoryMb: number,
    heardWithinMs: number,
    exceptId: string,
  ): Promise<{ id: string; memoryLimitMb: number }[]> {
    const rows = await this.dataSource.query<{ id: string; memory_limit_mb: number }[]>(
      `SELECT id, memory_limit_mb FROM workers
        WHERE id <> $1 AND status IN ('idle', 'busy') AND memory_limit_mb >= $2
          AND last_heartbeat_at > now() - ($3::double precision * interval '1 millisecond')
        ORDER BY memory_limit_mb DESC, id`,
      [exceptId, memoryMb, heardWithinMs],
    );
    return rows.map((r) => ({ id: r.id, memoryLimitMb: r.memory_limit_mb }));
  }
}
