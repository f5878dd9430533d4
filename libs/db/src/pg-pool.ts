import type { Pool } from 'pg';
import type { DataSource } from 'typeorm';

/**
 * The `pg` pool inside an initialised Postgres DataSource, for the few hot reads that run as
 * plain prepared SQL instead of through TypeORM's query builder and entity hydration. It is
 * the same pool (size, statement_timeout, application name), so nothing extra connects.
 */
export function pgPool(dataSource: DataSource): Pool {
  const pool = (dataSource.driver as unknown as { master?: Partial<Pool> }).master;
  if (!dataSource.isInitialized || typeof pool?.query !== 'function') {
    throw new Error('pgPool needs an initialised Postgres DataSource');
  }
  return pool as Pool;
}
