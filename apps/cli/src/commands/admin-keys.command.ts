import { ConfigError, commonEnvShape, parseEnv } from '@lorafleet/contracts';
import { ApiKeysRepository, TenantsRepository, createDataSource } from '@lorafleet/db';
import type { DataSource } from 'typeorm';

import { parseCommandArgs } from '../cli-args.util';
import { EXIT_FAILURE, EXIT_OK, UsageError, type CliIo } from '../cli.io';

export const CREATE_KEY_USAGE = `Usage: lorafleet admin create-key --tenant <name-or-id> [--admin | --fleet-admin] [--json]

Issues a new API key for an existing tenant and prints it (only the key; with --json
{"key", "id", "tenant_id", "is_admin", "is_fleet_admin"}). The key is shown once: Postgres
stores only its SHA-256.
  --admin        tenant admin: may also call GET /v1/workers, which then shows only this
                 tenant's jobs on the workers and no queue depth
  --fleet-admin  fleet admin: GET /v1/workers with every tenant's jobs and the queue depth,
                 and /admin/queues (the queue board shows every tenant's jobs)

Needs DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/lorafleet).`;

export const REVOKE_KEY_USAGE = `Usage: lorafleet admin revoke-key <key-or-id> [--json]

Revokes an API key, given as the key itself (lf-…) or its id (key-…). Requests with it answer
401 from then on.

Needs DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/lorafleet).`;

/** EX_CONFIG, as `admin db` uses for a missing or bad DATABASE_URL. */
const EXIT_CONFIG = 78;

/** Connects with DATABASE_URL, runs `work`, disconnects; connection problems are exit 1. */
async function withDatabase(
  io: CliIo,
  work: (repositories: {
    tenants: TenantsRepository;
    apiKeys: ApiKeysRepository;
  }) => Promise<number>,
): Promise<number> {
  let url: string;
  try {
    url = parseEnv({ DATABASE_URL: commonEnvShape.DATABASE_URL }).DATABASE_URL;
  } catch (error) {
    if (error instanceof ConfigError) {
      io.err(error.message);
      return EXIT_CONFIG;
    }
    throw error;
  }
  const dataSource: DataSource = createDataSource({
    url,
    applicationName: 'lorafleet-cli',
    poolSize: 1,
  });
  try {
    await dataSource.initialize();
  } catch (error) {
    io.err(
      `error: cannot connect to Postgres at ${new URL(url).host}: ${(error as Error).message}`,
    );
    return EXIT_FAILURE;
  }
  try {
    return await work({
      tenants: new TenantsRepository(dataSource),
      apiKeys: new ApiKeysRepository(dataSource),
    });
  } finally {
    await dataSource.destroy();
  }
}

/** `lorafleet admin create-key --tenant <name-or-id> [--admin | --fleet-admin] [--json]` */
export async function runCreateKey(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, {
    tenant: { type: 'string' },
    admin: { type: 'boolean' },
    'fleet-admin': { type: 'boolean' },
    json: { type: 'boolean' },
  });
  if (values.help) {
    io.out(CREATE_KEY_USAGE);
    return EXIT_OK;
  }
  if (positionals.length > 0) {
    throw new UsageError(`unexpected argument "${positionals[0]}"`);
  }
  const tenantArg = values.tenant?.trim();
  if (!tenantArg) throw new UsageError('--tenant is required');
  return withDatabase(io, async ({ tenants, apiKeys }) => {
    const matches = await tenants.findByNameOrId(tenantArg);
    if (matches.length === 0) {
      io.err(
        `error: no tenant named "${tenantArg}" (create one with "lorafleet admin db create-tenant <name>")`,
      );
      return EXIT_FAILURE;
    }
    if (matches.length > 1) {
      io.err(
        `error: ${matches.length} tenants are named "${tenantArg}"; pass one id with --tenant: ${matches
          .map((t) => t.id)
          .join(', ')}`,
      );
      return EXIT_FAILURE;
    }
    const issued = await apiKeys.issue(matches[0].id, {
      isAdmin: values.admin === true,
      isFleetAdmin: values['fleet-admin'] === true,
    });
    io.out(
      values.json
        ? JSON.stringify({
            key: issued.plaintext,
            id: issued.apiKey.id,
            tenant_id: issued.apiKey.tenantId,
            is_admin: issued.apiKey.isAdmin,
            is_fleet_admin: issued.apiKey.isFleetAdmin,
          })
        : issued.plaintext,
    );
    return EXIT_OK;
  });
}

/** `lorafleet admin revoke-key <key-or-id> [--json]` */
export async function runRevokeKey(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, { json: { type: 'boolean' } });
  if (values.help) {
    io.out(REVOKE_KEY_USAGE);
    return EXIT_OK;
  }
  if (positionals.length !== 1 || positionals[0].trim() === '') {
    throw new UsageError(
      positionals.length === 0
        ? 'revoke-key needs the key or its id'
        : `revoke-key takes one key or id (got ${positionals.length})`,
    );
  }
  const keyOrId = positionals[0].trim();
  return withDatabase(io, async ({ apiKeys }) => {
    const key = await apiKeys.find(keyOrId);
    if (!key) {
      io.err('error: no such API key (give the key itself or its id, key-…)');
      return EXIT_FAILURE;
    }
    const revoked = await apiKeys.revoke(key.id);
    if (values.json) {
      io.out(
        JSON.stringify({
          id: key.id,
          tenant_id: key.tenantId,
          revoked: true,
          already_revoked: !revoked,
        }),
      );
    } else {
      io.out(
        revoked
          ? `Revoked API key ${key.id} (${key.keyPrefix}…) of tenant ${key.tenantId}.`
          : `API key ${key.id} (${key.keyPrefix}…) was already revoked.`,
      );
    }
    return EXIT_OK;
  });
}
