import { Controller, Get, Param, Res, UseGuards } from '@nestjs/common';
import type { AuthenticatedPrincipal } from '@lorafleet/db';
import type { FastifyReply } from 'fastify';
import { ApiKeyGuard } from '../auth/api-key.guard';
import { Principal } from '../auth/principal.decorator';
import type { AdapterObject } from '@lorafleet/contracts';
import { AdaptersService } from './adapters.service';

@Controller('v1/adapters')
@UseGuards(ApiKeyGuard)
export class AdaptersController {
  constructor(private readonly adapters: AdaptersService) {}

  @Get(':id')
  async retrieve(
    @Principal() principal: AuthenticatedPrincipal,
    @Param('id') id: string,
  ): Promise<AdapterObject> {
    return this.adapters.present(await this.adapters.get(principal.tenantId, id));
  }

  @Get(':id/files/:name')
  async file(
    @Principal() principal: AuthenticatedPrincipal,
    @Param('id') id: string,
    @Param('name') name: string,
    @Res() reply: FastifyReply,
  ): Promise<void> {
    const { content, contentType } = await this.adapters.file(principal.tenantId, id, name);
    await reply
      .header('content-type', contentType)
      .header('content-disposition', `attachment; filename="${name}"`)
      .send(content);
  }

  @Get(':id/archive')
  async archive(
    @Principal() principal: AuthenticatedPrincipal,
    @Param('id') id: string,
    @Res() reply: FastifyReply,
  ): Promise<void> {
    const archive = await this.adapters.archive(principal.tenantId, id);
    await reply
      .header('content-type', 'application/gzip')
      .header('content-disposition', `attachment; filename="${id}.tar.gz"`)
      .send(archive);
  }
}
