export const WORKER_ENV = Symbol('WORKER_ENV');
export const DATA_SOURCE = Symbol('DATA_SOURCE');
export const WORKER_IDENTITY = Symbol('WORKER_IDENTITY');

export interface WorkerIdentity {
  id: string;
  host: string;
  pid: number;
}

/** The process's ioredis clients (BullMQ's included), see `RedisClients` in libs/db. */
export const REDIS_CLIENTS = Symbol('REDIS_CLIENTS');

/** The processor's `AttemptJobs` over the per-aggregate repositories (processor/attempt-ports.ts). */
export const ATTEMPT_JOBS = Symbol('ATTEMPT_JOBS');

/** Starts a trainer child (`SpawnTrainerChild`): a forked process, or a scripted one in tests. */
export const TRAINER_SPAWN = Symbol('TRAINER_SPAWN');
