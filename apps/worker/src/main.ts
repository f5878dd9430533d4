import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ConfigError, parseEnv, workerEnvShape } from '@lorafleet/contracts';
import { shutdownOnSignals } from '@lorafleet/db';
import { WorkerModule } from './worker.module';

async function main(): Promise<void> {
  const env = parseEnv(workerEnvShape);
  const app = await NestFactory.createApplicationContext(WorkerModule.forEnv(env), {
    logger: ['error', 'warn', 'log'],
  });
  // Not Nest's enableShutdownHooks: it waits for the hooks without a limit, and with Redis
  // unreachable they never finished (issue 14, item 13). This bounds the whole shutdown by
  // LORAFLEET_SHUTDOWN_GRACE_MS: trainers get the grace less a reserve to checkpoint (the
  // processor), a queue that cannot reach Redis is left unclosed (QueueConsumerService),
  // and whatever still hangs at the end of the grace (Postgres not answering) ends with
  // exit status 1.
  shutdownOnSignals({
    graceMs: env.LORAFLEET_SHUTDOWN_GRACE_MS,
    close: () => app.close(),
    logger: new Logger('Shutdown'),
  });
}

main().catch((error: unknown) => {
  if (error instanceof ConfigError) {
    console.error(error.message);
    process.exit(78);
  }
  console.error(error);
  process.exit(1);
});
