import 'reflect-metadata';
import multipart from '@fastify/multipart';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import type { ApiEnv } from '@lorafleet/contracts';
import type { FastifyInstance } from 'fastify';
import { AppModule } from './app.module';
import { registerDashboard } from './dashboard/dashboard.plugin';
import { fastifyErrorOptions, registerHttpPolicy } from './http/http-policy';
import {
  PinoNestLogger,
  fastifyLoggingOptions,
  registerRequestLogging,
  type LogDestination,
} from './http/request-logging';
import { registerOps } from './ops/ops.setup';

export interface CreateApiAppOptions {
  /** Where the JSON log lines go (default stdout); tests capture them here. */
  logDestination?: LogDestination;
}

/** Builds the Nest application on Fastify; `main.ts` listens, tests may call this directly. */
export async function createApiApp(
  env: ApiEnv,
  options: CreateApiAppOptions = {},
): Promise<NestFastifyApplication> {
  const adapter = new FastifyAdapter({
    // JSON bodies are small (job specs); uploads go through multipart with their own limit.
    bodyLimit: 1024 * 1024,
    trustProxy: true,
    ...fastifyLoggingOptions(env, options.logDestination),
    ...fastifyErrorOptions(),
  });
  const fastify: FastifyInstance = adapter.getInstance();
  const app = await NestFactory.create<NestFastifyApplication>(AppModule.forEnv(env), adapter, {
    // Nest's own messages go through the same pino logger: one JSON format for the process.
    logger: new PinoNestLogger(fastify.log),
  });
  // The request-id header and the per-request log line, before Nest registers its routes.
  registerRequestLogging(fastify);
  registerHttpPolicy(fastify); // security headers; /v1 bodies must be JSON
  await app.register(multipart, {
    limits: { fileSize: env.LORAFLEET_UPLOAD_MAX_BYTES, files: 1, fields: 10 },
    throwFileSizeLimit: true,
  });
  // Metrics hook and bull-board: before init, so they see every route Nest registers, and
  // before the dashboard so its routes are measured too.
  await registerOps(app);
  await registerDashboard(app); // the web UI at / (apps/dashboard/dist), same origin as /v1
  // No enableShutdownHooks: main.ts handles SIGTERM with a deadline (issue 14, item 14).
  return app;
}
