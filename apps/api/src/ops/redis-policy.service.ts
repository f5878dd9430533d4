import {
  Inject,
  Injectable,
  Logger,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
} from '@nestjs/common';
import type { Redis } from 'ioredis';
import { REDIS } from '../infra/tokens';
import { withTimeout } from './with-timeout';

/**
 * The warning for an unsafe `maxmemory-policy`, or null when Redis evicts nothing. BullMQ
 * keeps queued jobs only in Redis; an evicting policy may drop them under memory pressure
 * (the reconciler would re-enqueue them from Postgres, but late and noisily). R23.
 */
export async function redisEvictionWarning(redis: Redis): Promise<string | null> {
  const reply = (await withTimeout(
    redis.config('GET', 'maxmemory-policy'),
    1000,
    'CONFIG GET maxmemory-policy',
  )) as string[];
  const policy = reply[1];
  return policy === 'noeviction'
    ? null
    : `redis maxmemory-policy is ${policy ?? 'unknown'}; BullMQ needs noeviction or queued jobs may vanish`;
}

/**
 * Logs the R23 warning at startup and again after every reconnect (a failover may land on a
 * differently configured Redis), so the problem shows in the logs, not only on /readyz.
 */
@Injectable()
export class RedisPolicyService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('RedisPolicy');
  private readonly onReady = () => void this.check();

  constructor(@Inject(REDIS) private readonly redis: Redis) {}

  onApplicationBootstrap(): Promise<void> {
    this.redis.on('ready', this.onReady);
    return this.redis.status === 'ready' ? this.check() : Promise.resolve();
  }

  onApplicationShutdown(): void {
    this.redis.off('ready', this.onReady);
  }

  /** One check; logs the outcome and never throws (Redis may be down at boot, see R4). */
  async check(): Promise<void> {
    try {
      const warning = await redisEvictionWarning(this.redis);
      if (warning) this.logger.warn(warning);
    } catch (error) {
      // Managed Redis services may disable CONFIG; say so rather than staying silent.
      this.logger.warn(`could not read redis maxmemory-policy: ${(error as Error).message}`);
    }
  }
}
