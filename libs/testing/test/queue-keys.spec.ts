import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { deleteQueueKeys } from '../src';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

describe('deleteQueueKeys', () => {
  let redis: Redis;
  beforeAll(() => {
    redis = new Redis(REDIS_URL);
  });
  afterAll(() => redis.disconnect());

  it('deletes the keys under the prefix and nothing else', async () => {
    const prefix = `lf-testing-${randomBytes(4).toString('hex')}`;
    const neighbour = `${prefix}x:keep`; // shares the text, not the "prefix:" namespace
    await redis.set(`${prefix}:fine-tune:meta`, '1');
    await redis.rpush(`${prefix}:fine-tune:wait`, 'a', 'b');
    await redis.set(neighbour, '1');
    try {
      expect(await deleteQueueKeys(REDIS_URL, prefix)).toBe(2);
      expect(await redis.keys(`${prefix}:*`)).toEqual([]);
      expect(await redis.get(neighbour)).toBe('1');
    } finally {
      await redis.del(neighbour);
    }
  });

  it('gives up at once on a Redis that is not there', async () => {
    const started = Date.now();
    expect(await deleteQueueKeys('redis://127.0.0.1:1', 'lf-none')).toBe(0);
    expect(Date.now() - started).toBeLessThan(5000);
  });
});
