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

/** API keys are stored as sha256 digests only (R20); the plaintext is shown once at creation. */
@Entity({ name: 'api_keys' })
export class ApiKeyEntity {
  @PrimaryColumn({ type: 'text', primaryKeyConstraintName: 'pk_api_keys' })
  id!: string;

  @Index('idx_api_keys_tenant_id')
  @Column({ name: 'tenant_id', type: 'text' })
  tenantId!: string;

  @ManyToOne(() => TenantEntity, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'tenant_id', foreignKeyConstraintName: 'fk_api_keys_tenant' })
  tenant?: TenantEntity;

  @Index('uq_api_keys_key_hash', { unique: true })
  @Column({ name: 'key_hash', type: 'text' })
  keyHash!: string;

  /** First characters of the key, safe to show in listings. */
  @Column({ name: 'key_prefix', type: 'text' })
  keyPrefix!: string;

  /** Tenant admin: may list the fleet's workers, seeing only its own tenant's jobs on them. */
  @Column({ name: 'is_admin', type: 'boolean', default: false })
  isAdmin!: boolean;

  /**
   * Fleet admin (implies `isAdmin`): sees every tenant's jobs on `/v1/workers` and
   * `/admin/queues`. A kind of its own so that an admin key minted for one tenant never
   * shows the others' jobs.
   */
  @Column({ name: 'is_fleet_admin', type: 'boolean', default: false })
  isFleetAdmin!: boolean;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @Column({ name: 'revoked_at', type: 'timestamptz', nullable: true })
  revokedAt!: Date | null;
}
