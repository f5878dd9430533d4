import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { ApiKeysRepository } from '@lorafleet/db';
import type { Queue } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import { FINE_TUNE_QUEUE } from '../infra/tokens';
import { bullBoardPlugin } from './bull-board.plugin';
import { MetricsService } from './metrics.service';

/**
 * Fastify-level ops wiring that Nest controllers cannot express. Must run before the app
 * initialises: hooks and plugins registered after Nest adds its routes would miss them.
 */
export async function registerOps(app: NestFastifyApplication): Promise<void> {
  const fastify: FastifyInstance = app.getHttpAdapter().getInstance();
  const metrics = app.get(MetricsService);
  // The route template (`/v1/fine_tuning/jobs/:id`), not the URL, keeps label sets bounded.
  fastify.addHook('onResponse', async (request, reply) => {
    metrics.observeRequest(
      request.method,
      request.routeOptions.url,
      reply.statusCode,
      reply.elapsedTime,
    );
  });
  await fastify.register(
    bullBoardPlugin(app.get<Queue>(FINE_TUNE_QUEUE), app.get(ApiKeysRepository)),
  );
}
