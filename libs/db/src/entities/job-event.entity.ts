import type { JsonObject } from './json';
import {
  Column,
  CreateDateColumn,
  Entity,
  Index,
  JoinColumn,
  ManyToOne,
  PrimaryGeneratedColumn,
} from 'typeorm';
import { FineTuningJobEntity } from './fine-tuning-job.entity';

export type JobEventLevel = 'info' | 'warn' | 'error';
export type JobEventType = 'message' | 'metrics' | 'status';

@Entity({ name: 'job_events' })
@Index('idx_job_events_job_id_id', ['jobId', 'id'])
export class JobEventEntity {
  /** Monotonic, so events page by id in the order they were written. bigint arrives as string. */
  @PrimaryGeneratedColumn('identity', {
    type: 'bigint',
    generatedIdentity: 'ALWAYS',
    primaryKeyConstraintName: 'pk_job_events',
  })
  id!: string;

  @Column({ name: 'job_id', type: 'text' })
  jobId!: string;

  @ManyToOne(() => FineTuningJobEntity, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'job_id', foreignKeyConstraintName: 'fk_job_events_job' })
  job?: FineTuningJobEntity;

  @Column({ type: 'text' })
  level!: JobEventLevel;

  @Column({ type: 'text' })
  type!: JobEventType;

  @Column({ type: 'text' })
  message!: string;

  @Column({ type: 'jsonb', nullable: true })
  data!: JsonObject | null;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;
}
