import { Logger } from '@nestjs/common';
import { ConfigError, apiEnvShape, parseEnv } from '@lorafleet/contracts';
import { createApiApp } from './bootstrap';

async function main(): Promise<void> {
  const env = parseEnv(apiEnvShape);
  const app = await createApiApp(env);
  await app.listen({ port: env.PORT, host: env.HOST });
  Logger.log(`lorafleet api listening on http://${env.HOST}:${env.PORT}`, 'Main');
}

main().catch((error: unknown) => {
  if (error instanceof ConfigError) {
    console.error(error.message);
    process.exit(78); // EX_CONFIG: a bad setting, not a crash
  }
  console.error(error);
  process.exit(1);
});
