import {
  Column,
  CreateDateColumn,
  Entity,
  Index,
  JoinColumn,
  ManyToOne,
  PrimaryColumn,
} from 'typeorm';
import { WebhookEndpointEntity } from './webhook-endpoint.entity';

/**
 * One event for one endpoint, and the webhook outbox (issue 20): a row is inserted in the
 * same transaction as the job's move into a terminal status, so the event exists exactly
 * when the status change commits. The API's dispatcher claims due rows, sends, and records
 * the outcome here, which is also the endpoint's delivery log.
 */
@Entity({ name: 'webhook_deliveries' })
@Index('idx_webhook_deliveries_due', ['nextAttemptAt'], { where: `"status" = 'pending'` })
@Index('idx_webhook_deliveries_endpoint', ['endpointId', 'createdAt'])
export class WebhookDeliveryEntity {
  @PrimaryColumn({ type: 'text', primaryKeyConstraintName: 'pk_webhook_deliveries' })
  id!: string;

  @Column({ name: 'endpoint_id', type: 'text' })
  endpointId!: string;

  @ManyToOne(() => WebhookEndpointEntity, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'endpoint_id', foreignKeyConstraintName: 'fk_webhook_deliveries_endpoint' })
  endpoint?: WebhookEndpointEntity;

  /** The endpoint's tenant, copied so every read can filter on it (R19). */
  @Column({ name: 'tenant_id', type: 'text' })
  tenantId!: string;

  /** `evt_…`, sent as `webhook-id`: the same on every attempt and every redelivery. */
  @Column({ name: 'event_id', type: 'text' })
  eventId!: string;

  @Column({ name: 'event_type', type: 'text' })
  eventType!: string;

  /** Not a foreign key: the log outlives nothing it needs from the job. */
  @Column({ name: 'job_id', type: 'text' })
  jobId!: string;

  /** The exact JSON bytes signed and sent, fixed at enqueue so every attempt is identical. */
  @Column({ type: 'text' })
  body!: string;

  /** `pending` (due at `next_attempt_at`), `delivered` or `failed` (retries exhausted). */
  @Column({ type: 'text', default: 'pending' })
  status!: string;

  @Column({ type: 'integer', default: 0 })
  attempts!: number;

  /**
   * When the dispatcher should (re)try. A claim moves it past the attempt's timeout, so an
   * attempt whose process died is retried once that lease runs out (at-least-once).
   */
  @Column({ name: 'next_attempt_at', type: 'timestamptz', nullable: true, default: () => 'now()' })
  nextAttemptAt!: Date | null;

  @Column({ name: 'last_status_code', type: 'integer', nullable: true })
  lastStatusCode!: number | null;

  @Column({ name: 'last_error', type: 'text', nullable: true })
  lastError!: string | null;

  @Column({ name: 'last_attempt_at', type: 'timestamptz', nullable: true })
  lastAttemptAt!: Date | null;

  @Column({ name: 'delivered_at', type: 'timestamptz', nullable: true })
  deliveredAt!: Date | null;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;
}
