import type { FileKind, FileStatus } from '@lorafleet/contracts';
import {
  Column,
  CreateDateColumn,
  Entity,
  Index,
  JoinColumn,
  ManyToOne,
  PrimaryColumn,
} from 'typeorm';
import { TenantEntity } from './tenant.entity';

@Entity({ name: 'files' })
@Index('idx_files_tenant_created', ['tenantId', 'createdAt'])
export class FileEntity {
  @PrimaryColumn({ type: 'text', primaryKeyConstraintName: 'pk_files' })
  id!: string;

  @Column({ name: 'tenant_id', type: 'text' })
  tenantId!: string;

  @ManyToOne(() => TenantEntity, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'tenant_id', foreignKeyConstraintName: 'fk_files_tenant' })
  tenant?: TenantEntity;

  @Column({ type: 'text' })
  filename!: string;

  @Column({ type: 'text' })
  purpose!: string;

  @Column({ type: 'integer' })
  bytes!: number;

  @Column({ type: 'text' })
  sha256!: string;

  /** Raw JSONL. Kept in Postgres so a worker on any node can read it (no shared disk). */
  @Column({ type: 'bytea', select: false })
  content!: Buffer;

  @Column({ type: 'text' })
  status!: FileStatus;

  @Column({ name: 'status_details', type: 'text', nullable: true })
  statusDetails!: string | null;

  /**
   * What the validator found the file to hold: `sft` or `preference` lines (one kind a file).
   * Null for a file that failed validation, a results file, and a file stored before kinds
   * were recorded (jobs validate such a file again and record its kind).
   */
  @Column({ type: 'text', nullable: true })
  kind!: FileKind | null;

  @Column({ name: 'example_count', type: 'integer', default: 0 })
  exampleCount!: number;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;
}
