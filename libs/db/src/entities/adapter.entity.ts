import type { Lineage } from '@lorafleet/contracts';
import type { JsonObject } from './json';
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
import { TenantEntity } from './tenant.entity';

/** A finished PEFT adapter. One per job (unique job_id), so a duplicate attempt cannot add a second. */
@Entity({ name: 'adapters' })
@Index('idx_adapters_tenant', ['tenantId'])
export class AdapterEntity {
  @PrimaryColumn({ type: 'text', primaryKeyConstraintName: 'pk_adapters' })
  id!: string;

  @Index('uq_adapters_job_id', { unique: true })
  @Column({ name: 'job_id', type: 'text' })
  jobId!: string;

  @ManyToOne(() => FineTuningJobEntity, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'job_id', foreignKeyConstraintName: 'fk_adapters_job' })
  job?: FineTuningJobEntity;

  @Column({ name: 'tenant_id', type: 'text' })
  tenantId!: string;

  @ManyToOne(() => TenantEntity, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'tenant_id', foreignKeyConstraintName: 'fk_adapters_tenant' })
  tenant?: TenantEntity;

  @Column({ name: 'base_model', type: 'text' })
  baseModel!: string;

  @Column({ name: 'fine_tuned_model', type: 'text' })
  fineTunedModel!: string;

  /** PEFT `adapter_config.json`. */
  @Column({ name: 'adapter_config', type: 'jsonb' })
  adapterConfig!: JsonObject;

  /** PEFT `adapter_model.safetensors` bytes. */
  @Column({ type: 'bytea', select: false })
  weights!: Buffer;

  @Column({ name: 'weights_sha256', type: 'text' })
  weightsSha256!: string;

  @Column({ type: 'jsonb', nullable: true })
  lineage!: Lineage | null;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;
}
