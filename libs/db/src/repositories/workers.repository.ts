import type { DataSource } from 'typeorm';
import { WorkerEntity, type WorkerStatus } from '../entities';

export interface WorkerRegistration {
  id: string;
  host: string;
  pid: number;
  backend: string;
  device: string | null;
  versions: Record<string, string> | null;
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
}
