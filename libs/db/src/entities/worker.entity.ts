import { Column, Entity, PrimaryColumn } from 'typeorm';

export type WorkerStatus = 'idle' | 'busy' | 'stopping' | 'gone';

@Entity({ name: 'workers' })
export class WorkerEntity {
  @PrimaryColumn({ type: 'text', primaryKeyConstraintName: 'pk_workers' })
  id!: string;

  @Column({ type: 'text' })
  host!: string;

  @Column({ type: 'integer' })
  pid!: number;

  @Column({ type: 'text' })
  backend!: string;

  @Column({ type: 'text', nullable: true })
  device!: string | null;

  @Column({ type: 'jsonb', nullable: true })
  versions!: Record<string, string> | null;

  @Column({ type: 'text' })
  status!: WorkerStatus;

  /**
   * The trainer's memory budget (LORAFLEET_MEMORY_LIMIT_MB or its default), MiB: a worker that
   * cannot fit a job hands it back only when a live worker has more. Null: registered by a
   * worker version that did not report it.
   */
  @Column({ name: 'memory_limit_mb', type: 'integer', nullable: true })
  memoryLimitMb!: number | null;

  @Column({ name: 'current_job_id', type: 'text', nullable: true })
  currentJobId!: string | null;

  @Column({ name: 'started_at', type: 'timestamptz' })
  startedAt!: Date;

  @Column({ name: 'last_heartbeat_at', type: 'timestamptz' })
  lastHeartbeatAt!: Date;
}
