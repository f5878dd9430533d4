import { Logger } from '@nestjs/common';
import { ConfigError, apiEnvShape, parseEnv } from '@lorafleet/contracts';
import { shutdownOnSignals } from '@lorafleet/db';
import { createApiApp } from './bootstrap';

async function main(): Promise<void> {
  const env = parseEnv(apiEnvShape);
  const app = await createApiApp(env);
  await app.listen({ port: env.PORT, host: env.HOST });
  Logger.log(`lorafleet api listening on http://${env.HOST}:${env.PORT}`, 'Main');
  // Fastify's close waits for every request in flight, with no limit: a client that sent its
  // headers and half a body kept the process alive after SIGTERM (issue 14, item 14). New
  // connections stop at once; requests in flight get the grace less a reserve; then every
  // connection left is closed, so the shutdown hooks (queue, Redis, Postgres) still run, and
  // the process exits 1. At the end of the grace it exits 1 whatever is still pending.
  shutdownOnSignals({
    graceMs: env.LORAFLEET_SHUTDOWN_GRACE_MS,
    close: () => app.close(),
    forceClose: () => app.getHttpServer().closeAllConnections(),
    logger: new Logger('Shutdown'),
  });
}

main().catch((error: unknown) => {
  if (error instanceof ConfigError) {
    console.error(error.message);
    process.exit(78); // EX_CONFIG: a bad setting, not a crash
  }
  console.error(error);
  process.exit(1);
});
