import {
  type DynamicModule,
  Inject,
  Logger,
  Module,
  type OnApplicationShutdown,
} from '@nestjs/common';
import type { WorkerEnv } from '@lorafleet/contracts';
import {
  AdaptersRepository,
  AttemptsRepository,
  CheckpointsRepository,
  FilesRepository,
  JobEventsRepository,
  JobsRepository,
  RedisClients,
  ServingAdaptersRepository,
  WorkersRepository,
  createDataSource,
} from '@lorafleet/db';
import { hostname } from 'node:os';
import type { DataSource } from 'typeorm';
import { attemptJobs } from './processor/attempt-ports';
import { FineTuneProcessor } from './processor/fine-tune.processor';
import { QueueConsumerService } from './processor/queue-consumer.service';
import { ServeConsumerService } from './serving/serve-consumer.service';
import { forkTrainerChild } from './trainer/trainer-process';
import {
  ATTEMPT_JOBS,
  DATA_SOURCE,
  REDIS_CLIENTS,
  TRAINER_SPAWN,
  WORKER_ENV,
  WORKER_IDENTITY,
  type WorkerIdentity,
} from './tokens';

const repositoryClasses = [
  AdaptersRepository,
  AttemptsRepository,
  CheckpointsRepository,
  FilesRepository,
  JobEventsRepository,
  JobsRepository,
  ServingAdaptersRepository,
  WorkersRepository,
] as const;

/** The worker: a Nest application context with no HTTP server (DESIGN §2). */
@Module({})
export class WorkerModule implements OnApplicationShutdown {
  constructor(@Inject(DATA_SOURCE) private readonly dataSource: DataSource) {}

  static forEnv(env: WorkerEnv): DynamicModule {
    const identity: WorkerIdentity = {
      id: env.LORAFLEET_WORKER_ID ?? `worker-${hostname()}-${process.pid}`,
      host: hostname(),
      pid: process.pid,
    };
    return {
      module: WorkerModule,
      providers: [
        { provide: WORKER_ENV, useValue: env },
        { provide: WORKER_IDENTITY, useValue: identity },
        { provide: TRAINER_SPAWN, useValue: forkTrainerChild() },
        // Every Redis connection (BullMQ's too) is made here, so each has an error listener
        // the queue consumer closes them all at shutdown (issue 14, items 13 and 15).
        { provide: REDIS_CLIENTS, useValue: new RedisClients(env.REDIS_URL, new Logger('Redis')) },
        {
          provide: DATA_SOURCE,
          useFactory: async () => {
            const dataSource = createDataSource({
              url: env.DATABASE_URL,
              applicationName: 'lorafleet-worker',
              poolSize: 4,
            });
            await dataSource.initialize();
            return dataSource;
          },
        },
        ...repositoryClasses.map((repository) => ({
          provide: repository,
          inject: [DATA_SOURCE],
          useFactory: (dataSource: DataSource) => new repository(dataSource),
        })),
        {
          provide: ATTEMPT_JOBS,
          inject: [
            JobsRepository,
            AttemptsRepository,
            JobEventsRepository,
            CheckpointsRepository,
            AdaptersRepository,
          ],
          useFactory: attemptJobs,
        },
        FineTuneProcessor,
        // Before the queue consumer: Nest boots providers in this order, and the registration
        // that the queue consumer writes last is what says the worker is up (tests, fleet).
        ...(env.LORAFLEET_WORKER_ROLES.includes('serve') ? [ServeConsumerService] : []),
        // Registration and heartbeats for every role; it consumes BullMQ only with `train`.
        QueueConsumerService,
      ],
    };
  }

  async onApplicationShutdown(): Promise<void> {
    if (this.dataSource.isInitialized) await this.dataSource.destroy();
  }
}
