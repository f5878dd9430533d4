import { Module } from '@nestjs/common';
import { MetricsService } from './metrics.service';
import { OpsController } from './ops.controller';
import { RedisPolicyService } from './redis-policy.service';

/** /metrics, /docs and the R23 startup check; bull-board and the HTTP hook are in ops.setup. */
@Module({
  controllers: [OpsController],
  providers: [MetricsService, RedisPolicyService],
  exports: [MetricsService],
})
export class OpsModule {}
