import type { MethodType } from '@lorafleet/contracts';
import { Column, CreateDateColumn, Entity, Index, PrimaryGeneratedColumn } from 'typeorm';

/**
 * One measured training speed (issue 20): a worker writes a row when a job's attempt succeeds,
 * with the tokens per second its trainer averaged over that attempt. The API's job estimate
 * reads the recent rows per (base model, training method, backend) to estimate a new job's wall
 * time: a DPO token costs more than a supervised one (a reference forward pass with the adapter
 * off, then the policy's forward and backward over both sides), so the two never mix. Rows are
 * fleet facts, not a tenant's data: they keep no foreign key to the job, so deleting a job or a
 * tenant keeps what the fleet learnt about its speed.
 */
@Entity({ name: 'worker_throughput' })
@Index('idx_worker_throughput_model_method_backend', [
  'baseModel',
  'method',
  'backend',
  'measuredAt',
])
export class WorkerThroughputEntity {
  @PrimaryGeneratedColumn('identity', {
    type: 'bigint',
    primaryKeyConstraintName: 'pk_worker_throughput',
  })
  id!: string;

  /** The base model's name under LORAFLEET_MODELS_DIR (the job's `model`). */
  @Column({ name: 'base_model', type: 'text' })
  baseModel!: string;

  /**
   * The job's training method (`spec.method.type`). Rows recorded before methods were (all
   * supervised: DPO did not train then) read `supervised`.
   */
  @Column({ type: 'text', default: 'supervised' })
  method!: MethodType;

  /** The tfjs backend the attempt trained on (`wasm-blas`, `webgpu`, `tensorflow`, …). */
  @Column({ type: 'text' })
  backend!: string;

  @Column({ name: 'worker_id', type: 'text' })
  workerId!: string;

  @Column({ name: 'job_id', type: 'text' })
  jobId!: string;

  @Column({ type: 'integer' })
  attempt!: number;

  /** Real (non-padding) tokens per second, averaged over the attempt's steps. */
  @Column({ name: 'tokens_per_second', type: 'double precision' })
  tokensPerSecond!: number;

  /** Tokens the job read over its whole run (its `trained_tokens`). */
  @Column({ name: 'trained_tokens', type: 'integer' })
  trainedTokens!: number;

  @CreateDateColumn({ name: 'measured_at', type: 'timestamptz' })
  measuredAt!: Date;
}
