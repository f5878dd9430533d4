import { Global, Inject, Logger, Module, type OnApplicationShutdown } from '@nestjs/common';
import { QUEUE_NAMES, type ApiEnv } from '@lorafleet/contracts';
import {
  AdaptersRepository,
  ApiKeysRepository,
  AttemptsRepository,
  CheckpointsRepository,
  FilesRepository,
  JobEventsRepository,
  JobsRepository,
  OutboxRepository,
  RedisClients,
  TenantsRepository,
  WebhooksRepository,
  WorkersRepository,
  createDataSource,
} from '@lorafleet/db';
import { Queue } from 'bullmq';
import type { DataSource } from 'typeorm';
import { API_ENV } from '../config/api-env.token';
import { DATA_SOURCE, FINE_TUNE_QUEUE, REDIS, REDIS_CLIENTS } from './tokens';

const repositoryClasses = [
  AdaptersRepository,
  ApiKeysRepository,
  AttemptsRepository,
  CheckpointsRepository,
  FilesRepository,
  JobEventsRepository,
  JobsRepository,
  OutboxRepository,
  TenantsRepository,
  WebhooksRepository,
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
      // Every Redis connection of the API (BullMQ's too) is made here, so each has an error
      // listener that logs an outage once, as JSON (issue 14, item 15).
      provide: REDIS_CLIENTS,
      inject: [API_ENV],
      useFactory: (env: ApiEnv) => new RedisClients(env.REDIS_URL, new Logger('Redis')),
    },
    {
      provide: REDIS,
      inject: [REDIS_CLIENTS],
      useFactory: (clients: RedisClients) =>
        // No offline queue: with Redis down, commands fail at once instead of piling up, so
        // the relay retries from the outbox and /readyz reports the outage (R4).
        clients.create('api', {
          maxRetriesPerRequest: 1,
          enableOfflineQueue: false,
          lazyConnect: false,
        }),
    },
    {
      provide: FINE_TUNE_QUEUE,
      inject: [API_ENV, REDIS_CLIENTS],
      useFactory: (env: ApiEnv, clients: RedisClients) => {
        const queue = new Queue(QUEUE_NAMES.fineTune, {
          prefix: env.LORAFLEET_QUEUE_PREFIX,
          connection: clients.create('bullmq queue', {
            maxRetriesPerRequest: 1,
            enableOfflineQueue: false,
          }),
        });
        // Without a listener BullMQ prints every connection error's stack to stderr.
        queue.on('error', (error) => clients.reportError('queue', error));
        return queue;
      },
    },
    ...repositoryClasses.map((repository) => ({
      provide: repository,
      inject: [DATA_SOURCE],
      useFactory: (dataSource: DataSource) => new repository(dataSource),
    })),
  ],
  exports: [DATA_SOURCE, REDIS, REDIS_CLIENTS, FINE_TUNE_QUEUE, ...repositoryClasses],
})
export class InfraModule implements OnApplicationShutdown {
  constructor(
    @Inject(DATA_SOURCE) private readonly dataSource: DataSource,
    @Inject(FINE_TUNE_QUEUE) private readonly queue: Queue,
    @Inject(REDIS_CLIENTS) private readonly redisClients: RedisClients,
  ) {}

  async onApplicationShutdown(): Promise<void> {
    // The queue's connection is shared (created here), so close() leaves it open.
    await this.queue.close();
    this.redisClients.disconnectAll();
    if (this.dataSource.isInitialized) await this.dataSource.destroy();
  }
}
