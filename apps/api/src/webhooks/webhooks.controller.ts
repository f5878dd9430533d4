import {
  Body,
  Controller,
  Delete,
  Get,
  HttpCode,
  Param,
  Post,
  Query,
  UseGuards,
} from '@nestjs/common';
import type { AuthenticatedPrincipal } from '@lorafleet/db';
import { ApiKeyGuard } from '../auth/api-key.guard';
import { Principal } from '../auth/principal.decorator';
import { ApiError } from '../errors/api-error';
import { WebhooksService } from './webhooks.service';

type QueryParams = Record<string, string | string[] | undefined>;

/** A query parameter given at most once: `?after=a&after=b` arrives as an array → 400. */
function single(query: QueryParams, name: string): string | undefined {
  const value = query[name];
  if (Array.isArray(value)) {
    throw new ApiError('invalid_request', `Query parameter ${name} may be given only once`, name);
  }
  return value;
}

/** Webhook endpoints and their delivery logs (issue 20, docs/api.md "Webhooks"). */
@Controller('v1/webhook_endpoints')
@UseGuards(ApiKeyGuard)
export class WebhooksController {
  constructor(private readonly webhooks: WebhooksService) {}

  @Post()
  @HttpCode(201)
  create(@Principal() principal: AuthenticatedPrincipal, @Body() body: unknown) {
    return this.webhooks.create(principal.tenantId, body);
  }

  @Get()
  list(@Principal() principal: AuthenticatedPrincipal, @Query() query: QueryParams) {
    return this.webhooks.list(principal.tenantId, single(query, 'after'), single(query, 'limit'));
  }

  @Get(':id')
  retrieve(@Principal() principal: AuthenticatedPrincipal, @Param('id') id: string) {
    return this.webhooks.retrieve(principal.tenantId, id);
  }

  @Delete(':id')
  delete(@Principal() principal: AuthenticatedPrincipal, @Param('id') id: string) {
    return this.webhooks.delete(principal.tenantId, id);
  }

  @Get(':id/deliveries')
  deliveries(
    @Principal() principal: AuthenticatedPrincipal,
    @Param('id') id: string,
    @Query() query: QueryParams,
  ) {
    return this.webhooks.deliveries(
      principal.tenantId,
      id,
      single(query, 'after'),
      single(query, 'limit'),
    );
  }

  @Get(':id/deliveries/:deliveryId')
  delivery(
    @Principal() principal: AuthenticatedPrincipal,
    @Param('id') id: string,
    @Param('deliveryId') deliveryId: string,
  ) {
    return this.webhooks.delivery(principal.tenantId, id, deliveryId);
  }

  /** Sends the delivery's event again as a new delivery, due now; answers that delivery. */
  @Post(':id/deliveries/:deliveryId/redeliver')
  @HttpCode(202)
  redeliver(
    @Principal() principal: AuthenticatedPrincipal,
    @Param('id') id: string,
    @Param('deliveryId') deliveryId: string,
  ) {
    return this.webhooks.redeliver(principal.tenantId, id, deliveryId);
  }
}
