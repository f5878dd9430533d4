import type { FineTuneSpec, JobStatus, Lineage, RequestedBackend } from '@lorafleet/contracts';
import {
  Column,
  CreateDateColumn,
  Entity,
  Index,
  JoinColumn,
  ManyToOne,
  PrimaryColumn,
  UpdateDateColumn,
} from 'typeorm';
import { TenantEntity } from './tenant.entity';

export interface JobErrorRecord {
  code: string;
  message: string;
  param: string | null;
}

@Entity({ name: 'fine_tuning_jobs' })
@Index('idx_jobs_tenant_created', ['tenantId', 'createdAt'])
@Index('idx_jobs_status', ['status'])
@Index('uq_jobs_tenant_idempotency_key', ['tenantId', 'idempotencyKey'], {
  unique: true,
  where: '"idempotency_key" IS NOT NULL',
})
export class FineTuningJobEntity {
  @PrimaryColumn({ type: 'text', primaryKeyConstraintName: 'pk_fine_tuning_jobs' })
  id!: string;

  @Column({ name: 'tenant_id', type: 'text' })
  tenantId!: string;

  @ManyToOne(() => TenantEntity, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'tenant_id', foreignKeyConstraintName: 'fk_jobs_tenant' })
  tenant?: TenantEntity;

  /** Base model name as given (a directory under LORAFLEET_MODELS_DIR or a built-in). */
  @Column({ type: 'text' })
  model!: string;

  /**
   * Content hash of the base model when the job was created (libs/data `hashBaseModel`). The
   * worker refuses to train on a base whose hash differs. Null for jobs created before it was
   * recorded.
   */
  @Column({ name: 'base_model_hash', type: 'text', nullable: true })
  baseModelHash!: string | null;

  @Column({ type: 'text' })
  status!: JobStatus;

  @Column({ name: 'training_file_id', type: 'text' })
  trainingFileId!: string;

  @Column({ name: 'validation_file_id', type: 'text', nullable: true })
  validationFileId!: string | null;

  @Column({ type: 'text', nullable: true })
  suffix!: string | null;

  @Column({ type: 'jsonb', nullable: true })
  metadata!: Record<string, string> | null;

  /**
   * What to train, resolved once at creation (libs/data `resolveFineTuneSpec`) and handed to
   * the trainer unchanged: seed, hyperparameters, lora and training.
   */
  @Column({ type: 'jsonb' })
  spec!: FineTuneSpec;

  @Column({ name: 'fine_tuned_model', type: 'text', nullable: true })
  fineTunedModel!: string | null;

  @Column({ type: 'jsonb', nullable: true })
  error!: JobErrorRecord | null;

  @Column({ name: 'trained_tokens', type: 'integer', nullable: true })
  trainedTokens!: number | null;

  @Column({ name: 'progress_step', type: 'integer', default: 0 })
  progressStep!: number;

  @Column({ name: 'progress_total_steps', type: 'integer', nullable: true })
  progressTotalSteps!: number | null;

  @Column({ name: 'progress_epoch', type: 'double precision', nullable: true })
  progressEpoch!: number | null;

  @Column({ name: 'estimated_finish', type: 'timestamptz', nullable: true })
  estimatedFinish!: Date | null;

  /** Number of attempts started; the fencing token below belongs to the latest. */
  @Column({ type: 'integer', default: 0 })
  attempt!: number;

  /** Attempts that ended in a retryable failure or a crash; hand-backs and pauses do not count (R12, R13). */
  @Column({ type: 'integer', default: 0 })
  failures!: number;

  /**
   * Lease token of the current attempt (R7). Every worker write filters on it, so a stale
   * or zombie attempt changes zero rows.
   */
  @Column({ name: 'lease_token', type: 'uuid', nullable: true })
  leaseToken!: string | null;

  @Column({ name: 'worker_id', type: 'text', nullable: true })
  workerId!: string | null;

  /** The backend the latest attempt's worker asked for (its LORAFLEET_BACKEND, e.g. `auto`). */
  @Column({ name: 'requested_backend', type: 'text', nullable: true })
  requestedBackend!: RequestedBackend | null;

  /** The backend the latest attempt's trainer initialised (e.g. `wasm-blas`); null until then. */
  @Column({ type: 'text', nullable: true })
  backend!: string | null;

  @Column({ name: 'adapter_id', type: 'text', nullable: true })
  adapterId!: string | null;

  @Column({ type: 'jsonb', nullable: true })
  lineage!: Lineage | null;

  /** Final full-validation metrics of the successful attempt. */
  @Column({ name: 'final_metrics', type: 'jsonb', nullable: true })
  finalMetrics!: Record<string, number> | null;

  /** Ids of result files (the step-metrics CSV), as OpenAI's `result_files`. */
  @Column({ name: 'result_files', type: 'jsonb', default: () => "'[]'" })
  resultFiles!: string[];

  /**
   * MiB the trainer's pre-flight estimated this job needs, set when a worker whose limit is
   * lower handed it back: workers below it pass the delivery on instead of claiming it.
   */
  @Column({ name: 'memory_required_mb', type: 'integer', nullable: true })
  memoryRequiredMb!: number | null;

  /** Peak resident memory of the successful attempt's trainer process (VmHWM), MiB. */
  @Column({ name: 'peak_memory_mb', type: 'integer', nullable: true })
  peakMemoryMb!: number | null;

  /** Mean training throughput of the successful attempt, real tokens per second. */
  @Column({ name: 'tokens_per_second', type: 'double precision', nullable: true })
  tokensPerSecond!: number | null;

  @Column({ name: 'idempotency_key', type: 'text', nullable: true })
  idempotencyKey!: string | null;

  /** sha256 of the canonical request body, to tell a replay from a conflicting reuse (R2). */
  @Column({ name: 'request_hash', type: 'text', nullable: true })
  requestHash!: string | null;

  @Column({ name: 'cancel_requested_at', type: 'timestamptz', nullable: true })
  cancelRequestedAt!: Date | null;

  @Column({ name: 'pause_requested_at', type: 'timestamptz', nullable: true })
  pauseRequestedAt!: Date | null;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' })
  updatedAt!: Date;

  @Column({ name: 'started_at', type: 'timestamptz', nullable: true })
  startedAt!: Date | null;

  @Column({ name: 'finished_at', type: 'timestamptz', nullable: true })
  finishedAt!: Date | null;
}
