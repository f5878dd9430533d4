import { Body, Controller, Get, HttpCode, Param, Post, Query, UseGuards } from '@nestjs/common';
import type { AuthenticatedPrincipal } from '@lorafleet/db';
import { ApiKeyGuard } from '../auth/api-key.guard';
import { Principal } from '../auth/principal.decorator';
import { JobsService } from './jobs.service';

@Controller('v1/fine_tuning/jobs')
@UseGuards(ApiKeyGuard)
export class JobsController {
  constructor(private readonly jobs: JobsService) {}

  @Post()
  @HttpCode(201)
  create(@Principal() principal: AuthenticatedPrincipal, @Body() body: unknown) {
    return this.jobs.create(principal.tenantId, body);
  }

  @Get()
  list(
    @Principal() principal: AuthenticatedPrincipal,
    @Query() query: Record<string, string | undefined>,
  ) {
    // `metadata[k]=v` arrives as flat keys because the query parser is not nested.
    const metadata: Record<string, string> = {};
    for (const [key, value] of Object.entries(query)) {
      const match = /^metadata\[(.+)\]$/.exec(key);
      if (match && value !== undefined) metadata[match[1]] = value;
    }
    return this.jobs.list(principal.tenantId, {
      after: query.after,
      limit: query.limit,
      status: query.status,
      metadata,
    });
  }

  @Get(':id')
  retrieve(@Principal() principal: AuthenticatedPrincipal, @Param('id') id: string) {
    return this.jobs.get(principal.tenantId, id);
  }

  @Get(':id/events')
  events(
    @Principal() principal: AuthenticatedPrincipal,
    @Param('id') id: string,
    @Query('after') after?: string,
    @Query('limit') limit?: string,
  ) {
    return this.jobs.events(principal.tenantId, id, after, limit);
  }

  @Post(':id/cancel')
  @HttpCode(200)
  cancel(@Principal() principal: AuthenticatedPrincipal, @Param('id') id: string) {
    return this.jobs.cancel(principal.tenantId, id);
  }
}
