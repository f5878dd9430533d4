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

/**
 * Transactional outbox (R1, R3): written in the same transaction as the job row, then a
 * relay enqueues it to BullMQ (jobId = job id, so enqueueing twice is harmless).
 */
@Entity({ name: 'outbox' })
@Index('idx_outbox_pending', ['id'], { where: '"dispatched_at" IS NULL' })
export class OutboxEntity {
  @PrimaryGeneratedColumn('identity', {
    type: 'bigint',
    generatedIdentity: 'ALWAYS',
    primaryKeyConstraintName: 'pk_outbox',
  })
  id!: string;

  @Column({ name: 'job_id', type: 'text' })
  jobId!: string;

  @ManyToOne(() => FineTuningJobEntity, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'job_id', foreignKeyConstraintName: 'fk_outbox_job' })
  job?: FineTuningJobEntity;

  @Column({ type: 'text' })
  queue!: string;

  @Column({ type: 'jsonb' })
  payload!: JsonObject;

  @Column({ type: 'integer', default: 0 })
  attempts!: number;

  /** BullMQ `delay` for this delivery: retry backoff (R13). */
  @Column({ name: 'delay_ms', type: 'integer', default: 0 })
  delayMs!: number;

  @Column({ name: 'last_error', type: 'text', nullable: true })
  lastError!: string | null;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @Column({ name: 'dispatched_at', type: 'timestamptz', nullable: true })
  dispatchedAt!: Date | null;
}
