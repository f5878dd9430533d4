import { Global, Inject, Module, type OnApplicationShutdown } from '@nestjs/common';
import { QUEUE_NAMES, type ApiEnv } from '@lorafleet/contracts';
import {
  AdaptersRepository,
  FilesRepository,
  JobsRepository,
  OutboxRepository,
  TenantsRepository,
  WorkersRepository,
  createDataSource,
} from '@lorafleet/db';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import type { DataSource } from 'typeorm';
import { API_ENV } from '../config/api-env.token';
import { DATA_SOURCE, FINE_TUNE_QUEUE, REDIS } from './tokens';

const repositoryClasses = [
  AdaptersRepository,
  FilesRepository,
  JobsRepository,
  OutboxRepository,
  TenantsRepository,
  WorkersRepository,
] as const;

/** Postgres, Redis and the queue producer, shared by every API module. */
@Global()
@Module({
  providers: [
    {
      provide: DATA_SOURCE,
      inject: [API_ENV],
      useFactory: async (env: ApiEnv) => {
        const dataSource = createDataSource({
          url: env.DATABASE_URL,
          applicationName: 'lorafleet-api',
        });
        await dataSource.initialize();
        return dataSource;
      },
    },
    {
      provide: REDIS,
      inject: [API_ENV],
      useFactory: (env: ApiEnv) =>
        // No offline queue: with Redis down, commands fail at once instead of piling up, so
        // the relay retries from the outbox and /readyz reports the outage (R4).
        new Redis(env.REDIS_URL, {
          maxRetriesPerRequest: 1,
          enableOfflineQueue: false,
          lazyConnect: false,
        }),
    },
    {
      provide: FINE_TUNE_QUEUE,
      inject: [API_ENV],
      useFactory: (env: ApiEnv) =>
        new Queue(QUEUE_NAMES.fineTune, {
          prefix: env.LORAFLEET_QUEUE_PREFIX,
          connection: { url: env.REDIS_URL, maxRetriesPerRequest: 1, enableOfflineQueue: false },
        }),
    },
    ...repositoryClasses.map((repository) => ({
      provide: repository,
      inject: [DATA_SOURCE],
      useFactory: (dataSource: DataSource) => new repository(dataSource),
    })),
  ],
  exports: [DATA_SOURCE, REDIS, FINE_TUNE_QUEUE, ...repositoryClasses],
})
export class InfraModule implements OnApplicationShutdown {
  constructor(
    @Inject(DATA_SOURCE) private readonly dataSource: DataSource,
    @Inject(REDIS) private readonly redis: Redis,
    @Inject(FINE_TUNE_QUEUE) private readonly queue: Queue,
  ) {}

  async onApplicationShutdown(): Promise<void> {
    await this.queue.close();
    this.redis.disconnect();
    if (this.dataSource.isInitialized) await this.dataSource.destroy();
  }
}
