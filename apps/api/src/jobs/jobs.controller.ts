import {
  Body,
  Controller,
  Get,
  Headers,
  HttpCode,
  Param,
  Post,
  Query,
  Req,
  Res,
  UseGuards,
} from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { withEtag } from '../http/etag';
import type { AuthenticatedPrincipal } from '@lorafleet/db';
import { ApiKeyGuard, DeferApiKeyCheck, type DeferredApiKey } from '../auth/api-key.guard';
import { Principal, PresentedApiKey } from '../auth/principal.decorator';
import { ApiError } from '../errors/api-error';
import { JobsService } from './jobs.service';

type QueryParams = Record<string, string | string[] | undefined>;

/** A query parameter given at most once: `?after=a&after=b` arrives as an array → 400. */
function single(query: QueryParams, name: string): string | undefined {
  const value = query[name];
  if (Array.isArray(value)) {
    throw new ApiError('invalid_request', `Query parameter ${name} may be given only once`, name);
  }
  return value;
}

@Controller('v1/fine_tuning/jobs')
@UseGuards(ApiKeyGuard)
export class JobsController {
  constructor(private readonly jobs: JobsService) {}

  @Post()
  @HttpCode(201)
  async create(
    @Principal() principal: AuthenticatedPrincipal,
    @Body() body: unknown,
    @Headers('idempotency-key') idempotencyKey: string | undefined,
    @Res({ passthrough: true }) reply: FastifyReply,
  ) {
    const { job, replayed } = await this.jobs.create(principal.tenantId, body, idempotencyKey);
    if (replayed) void reply.header('Idempotent-Replayed', 'true');
    return job;
  }

  @Get()
  async list(
    @Principal() principal: AuthenticatedPrincipal,
    @Query() query: QueryParams,
    @Req() request: FastifyRequest,
    @Res({ passthrough: true }) reply: FastifyReply,
  ) {
    // `metadata[k]=v` arrives as flat keys because the query parser is not nested.
    const metadata: Record<string, string> = {};
    for (const key of Object.keys(query)) {
      const match = /^metadata\[(.+)\]$/.exec(key);
      const value = match ? single(query, key) : undefined;
      if (!match || value === undefined) continue;
      // Assigning `__proto__` would set the object's prototype, silently dropping the filter;
      // no stored job can carry that key (Fastify refuses it in JSON bodies).
      if (match[1] === '__proto__') {
        throw new ApiError('invalid_request', 'metadata[__proto__] is not a valid filter', key);
      }
      metadata[match[1]] = value;
    }
    return withEtag(
      request,
      reply,
      await this.jobs.list(principal.tenantId, {
        after: single(query, 'after'),
        limit: single(query, 'limit'),
        status: single(query, 'status'),
        metadata,
      }),
    );
  }

  /**
   * The hottest read (clients poll it): the key check and the job read are one prepared
   * query, so the guard only parses the header here.
   */
  @Get(':id')
  @DeferApiKeyCheck()
  async retrieve(
    @PresentedApiKey() apiKey: DeferredApiKey,
    @Param('id') id: string,
    @Req() request: FastifyRequest,
    @Res({ passthrough: true }) reply: FastifyReply,
  ) {
    return withEtag(request, reply, await this.jobs.getWithApiKey(apiKey, id));
  }

  @Get(':id/events')
  events(
    @Principal() principal: AuthenticatedPrincipal,
    @Param('id') id: string,
    @Query() query: QueryParams,
  ) {
    return this.jobs.events(principal.tenantId, id, single(query, 'after'), single(query, 'limit'));
  }

  @Get(':id/checkpoints')
  checkpoints(
    @Principal() principal: AuthenticatedPrincipal,
    @Param('id') id: string,
    @Query() query: QueryParams,
  ) {
    return this.jobs.checkpoints(
      principal.tenantId,
      id,
      single(query, 'limit'),
      single(query, 'after'),
    );
  }

  @Post(':id/cancel')
  @HttpCode(200)
  cancel(@Principal() principal: AuthenticatedPrincipal, @Param('id') id: string) {
    return this.jobs.cancel(principal.tenantId, id);
  }

  @Post(':id/pause')
  @HttpCode(200)
  pause(@Principal() principal: AuthenticatedPrincipal, @Param('id') id: string) {
    return this.jobs.pause(principal.tenantId, id);
  }

  @Post(':id/resume')
  @HttpCode(200)
  resume(@Principal() principal: AuthenticatedPrincipal, @Param('id') id: string) {
    return this.jobs.resume(principal.tenantId, id);
  }
}
