/** Injection tokens for infrastructure that has no class of its own. */
export const DATA_SOURCE = Symbol('DATA_SOURCE');
export const REDIS = Symbol('REDIS');
/** Every ioredis client of the process (`RedisClients` from libs/db). */
export const REDIS_CLIENTS = Symbol('REDIS_CLIENTS');
export const FINE_TUNE_QUEUE = Symbol('FINE_TUNE_QUEUE');
