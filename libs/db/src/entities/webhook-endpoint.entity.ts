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

/**
 * A tenant's webhook subscription (issue 20). The signing secret is kept in plaintext: the
 * dispatcher needs it to sign every delivery (an HMAC key, unlike an API key, cannot be
 * checked against a digest). The API shows it only in the create response.
 */
@Entity({ name: 'webhook_endpoints' })
export class WebhookEndpointEntity {
  @PrimaryColumn({ type: 'text', primaryKeyConstraintName: 'pk_webhook_endpoints' })
  id!: string;

  @Index('idx_webhook_endpoints_tenant_id')
  @Column({ name: 'tenant_id', type: 'text' })
  tenantId!: string;

  @ManyToOne(() => TenantEntity, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'tenant_id', foreignKeyConstraintName: 'fk_webhook_endpoints_tenant' })
  tenant?: TenantEntity;

  @Column({ type: 'text' })
  url!: string;

  /** Subscribed event types (contracts `WEBHOOK_EVENT_TYPES`). */
  @Column({ type: 'text', array: true })
  events!: string[];

  /** `whsec_<base64 of 32 random bytes>`. */
  @Column({ type: 'text' })
  secret!: string;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;
}
