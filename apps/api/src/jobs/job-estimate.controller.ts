import { Body, Controller, HttpCode, Post, UseGuards } from '@nestjs/common';
import type { AuthenticatedPrincipal } from '@lorafleet/db';
import { ApiKeyGuard } from '../auth/api-key.guard';
import { Principal } from '../auth/principal.decorator';
import { JobEstimateService } from './job-estimate.service';

/**
 * `POST /v1/fine_tuning/jobs/estimate` (lorafleet extension, issue 20): the create body in,
 * what the job would train, need and take out; nothing is created. A static segment, so it
 * never meets the job routes' `:id`.
 */
@Controller('v1/fine_tuning/jobs')
@UseGuards(ApiKeyGuard)
export class JobEstimateController {
  constructor(private readonly estimates: JobEstimateService) {}

  @Post('estimate')
  @HttpCode(200)
  estimate(@Principal() principal: AuthenticatedPrincipal, @Body() body: unknown) {
    return this.estimates.estimate(principal.tenantId, body);
  }
}
