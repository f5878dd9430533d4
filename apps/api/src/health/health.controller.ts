import { Controller, Get, Inject, Res } from '@nestjs/common';
import type { FastifyReply } from 'fastify';
import type { Redis } from 'ioredis';
import type { DataSource } from 'typeorm';
import { DATA_SOURCE, REDIS } from '../infra/tokens';
import { redisEvictionWarning } from '../ops/redis-policy.service';
import { withTimeout } from '../ops/with-timeout';

/** Liveness and readiness (no /v1, no auth). */
@Controller()
export class HealthController {
  constructor(
    @Inject(DATA_SOURCE) private readonly dataSource: DataSource,
    @Inject(REDIS) private readonly redis: Redis,
  ) {}

  @Get('healthz')
  healthz() {
    return { status: 'ok' };
  }

  /** 503 unless both Postgres and Redis answer; warns unless Redis evicts nothing (R23). */
  @Get('readyz')
  async readyz(@Res() reply: FastifyReply): Promise<void> {
    const checks: Record<string, string> = {};
    const warnings: string[] = [];
    try {
      await withTimeout(this.dataSource.query('SELECT 1'), 1000, 'postgres ping');
      checks.postgres = 'ok';
    } catch (error) {
      checks.postgres = `down: ${(error as Error).message}`;
    }
    try {
      await withTimeout(this.redis.ping(), 1000, 'redis ping');
      checks.redis = 'ok';
      const warning = await redisEvictionWarning(this.redis);
      if (warning) warnings.push(warning);
    } catch (error) {
      checks.redis = `down: ${(error as Error).message}`;
    }
    const ready = Object.values(checks).every((c) => c === 'ok');
    await reply
      .status(ready ? 200 : 503)
      .send({ status: ready ? 'ready' : 'unavailable', checks, warnings });
  }
}
