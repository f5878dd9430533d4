import { ConfigError, parseEnv, commonEnvShape } from '@lorafleet/contracts';
import {
  ApiKeysRepository,
  TenantsRepository,
  createDataSource,
  pendingSchemaChanges,
  runMigrations,
} from '@lorafleet/db';

const USAGE = `Usage:
  lorafleet admin db migrate                 apply pending migrations
  lorafleet admin db check                   exit 1 if entities and migrations disagree
  lorafleet admin db create-tenant <name> [--admin | --fleet-admin] [--json]
                                             create a tenant and print its first API key

Needs DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/lorafleet).`;

/** `lorafleet admin db …`: operator commands that talk to Postgres directly. */
export async function runAdminDb(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  if (!command || command === '--help' || command === '-h' || rest.includes('--help')) {
    console.log(USAGE);
    return command ? 0 : 2;
  }
  if (!['migrate', 'check', 'create-tenant'].includes(command)) {
    console.error(`Unknown command "admin db ${command}".\n\n${USAGE}`);
    return 2;
  }
  let url: string;
  try {
    url = parseEnv({ DATABASE_URL: commonEnvShape.DATABASE_URL }).DATABASE_URL;
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      return 78;
    }
    throw error;
  }
  const dataSource = createDataSource({ url, applicationName: 'lorafleet-cli', poolSize: 2 });
  try {
    await dataSource.initialize();
  } catch (error) {
    console.error(
      `Cannot connect to Postgres at ${new URL(url).host}: ${(error as Error).message}`,
    );
    return 1;
  }
  try {
    switch (command) {
      case 'migrate': {
        const ran = await runMigrations(dataSource);
        console.log(
          ran.length
            ? `Applied ${ran.length} migration(s): ${ran.join(', ')}`
            : 'Schema is up to date.',
        );
        return 0;
      }
      case 'check': {
        const pending = await pendingSchemaChanges(dataSource);
        if (pending.length === 0) {
          console.log('Entities and migrations agree.');
          return 0;
        }
        console.error(`Schema drift; a migration is missing:\n${pending.join(';\n')}`);
        return 1;
      }
      default: {
        const name = rest.find((a) => !a.startsWith('--'));
        if (!name) {
          console.error(`create-tenant needs a name.\n\n${USAGE}`);
          return 2;
        }
        const tenant = await new TenantsRepository(dataSource).createTenant(name);
        const key = await new ApiKeysRepository(dataSource).issue(tenant.id, {
          isAdmin: rest.includes('--admin'),
          isFleetAdmin: rest.includes('--fleet-admin'),
        });
        if (rest.includes('--json')) {
          console.log(
            JSON.stringify({
              tenant_id: tenant.id,
              api_key: key.plaintext,
              is_admin: key.apiKey.isAdmin,
              is_fleet_admin: key.apiKey.isFleetAdmin,
            }),
          );
        } else {
          console.log(`tenant: ${tenant.id}\napi key (shown once): ${key.plaintext}`);
        }
        return 0;
      }
    }
  } finally {
    await dataSource.destroy();
  }
}
