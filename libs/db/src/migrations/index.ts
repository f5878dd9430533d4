import type { MixedList } from 'typeorm';
import { InitialSchema1795943627789 } from './1795943627789-initial-schema.migration';
import { WorkerResults1795945892651 } from './1795945892651-worker-results.migration';
import { BaseModelHash1795955175204 } from './1795955175204-base-model-hash.migration';
import { FleetAdminKeys1796505127912 } from './1796505127912-fleet-admin-keys.migration';
import { WorkerMemoryUsage1796505208846 } from './1796505208846-worker-memory-usage.migration';
import { FineTuneSpec1796515902332 } from './1796515902332-fine-tune-spec.migration';
import { LineageSpec1796516200000 } from './1796516200000-lineage-spec.migration';
import { FileKind1796520296176 } from './1796520296176-file-kind.migration';
import { WebhookDeliveries1796524634492 } from './1796524634492-webhook-deliveries.migration';
import { WorkerThroughput1796524791437 } from './1796524791437-worker-throughput.migration';
import { WorkerThroughputMethod1796528697644 } from './1796528697644-worker-throughput-method.migration';

/** Every migration, in order. Never edit a committed migration; generate a new one. */
// eslint-disable-next-line @typescript-eslint/no-unsafe-function-type
export const ALL_MIGRATIONS: MixedList<Function> = [
  InitialSchema1795943627789,
  WorkerResults1795945892651,
  BaseModelHash1795955175204,
  FleetAdminKeys1796505127912,
  WorkerMemoryUsage1796505208846,
  FineTuneSpec1796515902332,
  LineageSpec1796516200000,
  FileKind1796520296176,
  WebhookDeliveries1796524634492,
  WorkerThroughput1796524791437,
  WorkerThroughputMethod1796528697644,
];
