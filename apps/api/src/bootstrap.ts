import 'reflect-metadata';
import multipart from '@fastify/multipart';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import type { ApiEnv } from '@lorafleet/contracts';
import { AppModule } from './app.module';
import { registerDashboard } from './dashboard/dashboard.plugin';
import { registerOps } from './ops/ops.setup';

/** Builds the Nest application on Fastify; `main.ts` listens, tests may call this directly. */
export async function createApiApp(env: ApiEnv): Promise<NestFastifyApplication> {
  const adapter = new FastifyAdapter({
    // JSON bodies are small (job specs); uploads go through multipart with their own limit.
    bodyLimit: 1024 * 1024,
    trustProxy: true,
  });
  const app = await NestFactory.create<NestFastifyApplication>(AppModule.forEnv(env), adapter, {
    logger: ['error', 'warn', 'log', 'debug'].slice(
      0,
      ['error', 'warn', 'log', 'debug'].indexOf(env.LORAFLEET_LOG_LEVEL) + 1,
    ) as ('error' | 'warn' | 'log' | 'debug')[],
  });
  await app.register(multipart, {
    limits: { fileSize: env.LORAFLEET_UPLOAD_MAX_BYTES, files: 1, fields: 10 },
    throwFileSizeLimit: true,
  });
  // Metrics hook and bull-board: before init, so they see every route Nest registers, and
  // before the dashboard so its routes are measured too.
  await registerOps(app);
  await registerDashboard(app); // the web UI at / (apps/dashboard/dist), same origin as /v1
  app.enableShutdownHooks();
  return app;
}
