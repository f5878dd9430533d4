import type { MethodType } from '@lorafleet/contracts';
import type { DataSource } from 'typeorm';
import { WorkerEntity, WorkerThroughputEntity, type WorkerStatus } from '../entities';

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

/** One attempt's measured training speed (a `worker_throughput` row). */
export interface ThroughputSample {
  baseModel: string;
  /** The job's `spec.method.type`: DPO and supervised tokens cost different time. */
  method: MethodType;
  backend: string;
  workerId: string;
  jobId: string;
  attempt: number;
  tokensPerSecond: number;
  trainedTokens: number;
}

/** What the fleet measured for one base model on one backend. */
export interface BackendThroughput {
  backend: string;
  /** Median tokens/s of the most recent samples (a slow or fast outlier moves it little). */
  tokensPerSecond: number;
  /** How many samples the median is over (at most the `recent` asked for). */
  samples: number;
  lastMeasuredAt: Date;
}

/** The backends live workers train on, with how many and the largest memory budget among them. */
export interface FleetBackend {
  backend: string;
  workers: number;
  /** The largest trainer memory budget (MiB) of the backend's live workers; null if none said. */
  maxMemoryLimitMb: number | null;
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

  /** Records an attempt's training speed, for the job estimate's wall times (issue 20). */
  async recordThroughput(sample: ThroughputSample): Promise<void> {
    await this.dataSource.getRepository(WorkerThroughputEntity).insert(sample);
  }

  /**
   * Per backend, the median tokens/s of the `recent` newest samples for `baseModel` trained
   * with `method` (index `idx_worker_throughput_model_method_backend`). Backends never measured
   * on it with that method are absent.
   */
  async throughputFor(
    baseModel: string,
    method: MethodType,
    recent = 20,
  ): Promise<BackendThroughput[]> {
    const rows = await this.dataSource.query<
      { backend: string; tokens_per_second: number; samples: number; last_measured_at: Date }[]
    >(
      `SELECT backend,
              percentile_cont(0.5) WITHIN GROUP (ORDER BY tokens_per_second) AS tokens_per_second,
              count(*)::int AS samples, max(measured_at) AS last_measured_at
         FROM (SELECT backend, tokens_per_second, measured_at,
                      row_number() OVER (PARTITION BY backend ORDER BY measured_at DESC, id DESC) AS n
                 FROM worker_throughput WHERE base_model = $1 AND method = $2) newest
        WHERE n <= $3
        GROUP BY backend
        ORDER BY backend`,
      [baseModel, method, recent],
    );
    return rows.map((r) => ({
      backend: r.backend,
      tokensPerSecond: r.tokens_per_second,
      samples: r.samples,
      lastMeasuredAt: r.last_measured_at,
    }));
  }

  /**
   * The backends of the workers heard from within `heardWithinMs` that train (`idle` or
   * `busy`, not shutting down), alphabetically.
   */
  async liveBackends(heardWithinMs: number): Promise<FleetBackend[]> {
    const rows = await this.dataSource.query<
      { backend: string; workers: number; max_memory_limit_mb: number | null }[]
    >(
      `SELECT backend, count(*)::int AS workers, max(memory_limit_mb) AS max_memory_limit_mb
         FROM workers
        WHERE status IN ('idle', 'busy')
          AND last_heartbeat_at > now() - ($1::double precision * interval '1 millisecond')
        GROUP BY backend
        ORDER BY backend`,
      [heardWithinMs],
    );
    return rows.map((r) => ({
      backend: r.backend,
      workers: r.workers,
      maxMemoryLimitMb: r.max_memory_limit_mb,
    }));
  }
}
