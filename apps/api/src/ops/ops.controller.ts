import { Controller, Get, Header, Res } from '@nestjs/common';
import type { FastifyReply } from 'fastify';
import { renderDocsPage } from './docs.page';
import { MetricsService } from './metrics.service';
import { renderOpenApiJson } from './openapi.document';

/** Ops endpoints outside /v1 and without auth: Prometheus scrape and API reference. */
@Controller()
export class OpsController {
  // Both documents are pure functions of the code: build them once per process.
  private readonly openApiJson = renderOpenApiJson();
  private readonly docsPage = renderDocsPage();

  constructor(private readonly metrics: MetricsService) {}

  @Get('metrics')
  async scrape(@Res() reply: FastifyReply): Promise<void> {
    const body = await this.metrics.render();
    await reply.header('content-type', this.metrics.contentType).send(body);
  }

  @Get('docs/openapi.json')
  @Header('content-type', 'application/json; charset=utf-8')
  openApi(): string {
    return this.openApiJson;
  }

  @Get('docs')
  @Header('content-type', 'text/html; charset=utf-8')
  docs(): string {
    return this.docsPage;
  }
}
