import {
  Column,
  CreateDateColumn,
  Entity,
  Index,
  JoinColumn,
  ManyToOne,
  PrimaryColumn,
} from 'typeorm';
import { FineTuningJobEntity } from './fine-tuning-job.entity';

@Entity({ name: 'checkpoints' })
@Index('idx_checkpoints_job_step', ['jobId', 'step'])
export class CheckpointEntity {
  @PrimaryColumn({ type: 'text', primaryKeyConstraintName: 'pk_checkpoints' })
  id!: string;

  @Column({ name: 'job_id', type: 'text' })
  jobId!: string;

  @ManyToOne(() => FineTuningJobEntity, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'job_id', foreignKeyConstraintName: 'fk_checkpoints_job' })
  job?: FineTuningJobEntity;

  @Column({ type: 'integer' })
  attempt!: number;

  @Column({ type: 'integer' })
  step!: number;

  @Column({ type: 'jsonb', nullable: true })
  metrics!: Record<string, number> | null;

  /** Self-describing trainer checkpoint blob (adapter, optimizer state, RNG, data cursor). */
  @Column({ type: 'bytea', select: false })
  blob!: Buffer;

  @Column({ type: 'integer' })
  bytes!: number;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;
}
