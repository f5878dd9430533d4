import type { Pool, QueryResultRow } from 'pg';
import type { DataSource } from 'typeorm';
import { sha256Hex } from './ids';

/**
 * The `pg` pool inside an initialised Postgres DataSource, for the hot reads that run as
 * plain prepared SQL instead of through TypeORM's entity hydration. It is the same pool
 * (size, statement_timeout, application name), so nothing extra connects.
 */
export function pgPool(dataSource: DataSource): Pool {
  const pool = (dataSource.driver as unknown as { master?: Partial<Pool> }).master;
  if (!dataSource.isInitialized || typeof pool?.query !== 'function') {
    throw new Error('pgPool needs an initialised Postgres DataSource');
  }
  return pool as Pool;
}

/** Statement names by SQL text; a handful of fixed statements, so it stays small. */
const statementNames = new Map<string, string>();

/**
 * Runs `sql` as a named prepared statement on the pool: Postgres parses and plans it once per
 * connection. The name carries a hash of the SQL, so two different statements (the job
 * list's filter shapes, or a statement changed by a deploy) never share a name.
 */
export async function preparedQuery<Row extends QueryResultRow>(
  dataSource: DataSource,
  label: string,
  sql: string,
  values: unknown[],
): Promise<Row[]> {
  let name = statementNames.get(sql);
  if (name === undefined) {
    name = `lorafleet_${label}_${sha256Hex(sql).slice(0, 12)}`;
    statementNames.set(sql, name);
  }
  const { rows } = await pgPool(dataSource).query<Row>({ name, text: sql, values });
  return rows;
}
