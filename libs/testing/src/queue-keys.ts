import { Redis } from 'ioredis';

/**
 * Deletes every Redis key under a test's private BullMQ prefix. Best effort and quick: a Redis
 * that is down (a fault test may have stopped it) is not retried, so cleanup never hangs.
 * Resolves with the number of keys deleted.
 */
export async function deleteQueueKeys(redisUrl: string, queuePrefix: string): Promise<number> {
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 0, retryStrategy: () => null });
  redis.on('error', () => undefined); // a refused connection is reported by the command below
  try {
    const keys = await redis.keys(`${queuePrefix}:*`);
    return keys.length > 0 ? await redis.del(...keys) : 0;
  } catch {
    return 0;
  } finally {
    redis.disconnect();
  }
}
