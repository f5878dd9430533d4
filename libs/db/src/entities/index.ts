import { AdapterEntity } from './adapter.entity';
import { ApiKeyEntity } from './api-key.entity';
import { CheckpointEntity } from './checkpoint.entity';
import { FileEntity } from './file.entity';
import { FineTuningJobEntity } from './fine-tuning-job.entity';
import { JobEventEntity } from './job-event.entity';
import { OutboxEntity } from './outbox.entity';
import { TenantEntity } from './tenant.entity';
import { WebhookDeliveryEntity } from './webhook-delivery.entity';
import { WebhookEndpointEntity } from './webhook-endpoint.entity';
import { WorkerEntity } from './worker.entity';
import { WorkerThroughputEntity } from './worker-throughput.entity';

export {
  AdapterEntity,
  ApiKeyEntity,
  CheckpointEntity,
  FileEntity,
  FineTuningJobEntity,
  JobEventEntity,
  OutboxEntity,
  TenantEntity,
  WebhookDeliveryEntity,
  WebhookEndpointEntity,
  WorkerEntity,
  WorkerThroughputEntity,
};
export type { JobErrorRecord } from './fine-tuning-job.entity';
export type { JobEventLevel, JobEventType } from './job-event.entity';
export type { WorkerStatus } from './worker.entity';

export const ALL_ENTITIES = [
  TenantEntity,
  ApiKeyEntity,
  FileEntity,
  FineTuningJobEntity,
  JobEventEntity,
  CheckpointEntity,
  AdapterEntity,
  WorkerEntity,
  WorkerThroughputEntity,
  OutboxEntity,
  WebhookEndpointEntity,
  WebhookDeliveryEntity,
];
export type { JsonObject, JsonValue } from './json';
