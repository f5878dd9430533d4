import 'reflect-metadata';
import { DataSource, type DataSourceOptions } from 'typeorm';
import { ALL_ENTITIES } from './entities';
import { ALL_MIGRATIONS } from './migrations';

export interface DataSourceSettings {
  /** postgres://user@host:port/db */
  url: string;
  /** Pool size per process. */
  poolSize?: number;
  /** Application name shown in pg_stat_activity (api, worker, cli). */
  applicationName?: string;
  logging?: boolean;
}

/**
 * The one TypeORM configuration every process uses. Postgres is the record of truth
 * (docs/adr/0002-postgres-record-of-truth-redis-queue.md), so `synchronize` is off everywhere:
 * the schema changes only through committed migrations, never by TypeORM altering (and
 * possibly dropping) columns at boot; `pendingSchemaChanges` checks the two agree.
 */
export function dataSourceOptions(settings: DataSourceSettings): DataSourceOptions {
  return {
    type: 'postgres',
    url: settings.url,
    entities: ALL_ENTITIES,
    migrations: ALL_MIGRATIONS,
    migrationsTableName: 'typeorm_migrations',
    synchronize: false,
    migrationsRun: false,
    logging: settings.logging ?? false,
    applicationName: settings.applicationName ?? 'lorafleet',
    // Fail fast instead of hanging when Postgres is down (R4: the API must answer 503).
    connectTimeoutMS: 3000,
    extra: {
      max: settings.poolSize ?? 10,
      connectionTimeoutMillis: 3000,
      // A statement that blocks longer than this is a bug or an outage; surface it.
      statement_timeout: 30_000,
    },
  };
}

export function createDataSource(settings: DataSourceSettings): DataSource {
  return new DataSource(dataSourceOptions(settings));
}

/** Applies pending migrations; returns the names of those it ran. */
export async function runMigrations(dataSource: DataSource): Promise<string[]> {
  const ran = await dataSource.runMigrations({ transaction: 'each' });
  return ran.map((m) => m.name);
}

/**
 * SQL that would bring the database in line with the entities. Empty after migrations when
 * entities and migrations agree; a test and `lorafleet admin db check` assert that.
 */
export async function pendingSchemaChanges(dataSource: DataSource): Promise<string[]> {
  const sqlInMemory = await dataSource.driver.createSchemaBuilder().log();
  return sqlInMemory.upQueries.map((q) => q.query);
}
