import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import { ConfigError, parseEnv, workerEnvShape } from '@lorafleet/contracts';
import { WorkerModule } from './worker.module';

async function main(): Promise<void> {
  const env = parseEnv(workerEnvShape);
  const app = await NestFactory.createApplicationContext(WorkerModule.forEnv(env), {
    logger: ['error', 'warn', 'log'],
  });
  app.enableShutdownHooks();
}

main().catch((error: unknown) => {
  if (error instanceof ConfigError) {
    console.error(error.message);
    process.exit(78);
  }
  console.error(error);
  process.exit(1);
});
