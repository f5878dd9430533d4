import type { DataSource } from 'typeorm';
import { FineTuningJobEntity } from '../entities';

/** One job column in a plain SQL read: entity property, database column, result alias. */
export interface JobColumn {
  property: string;
  column: string;
  alias: string;
}

export interface JobSelect {
  columns: JobColumn[];
  /** `j."col" AS cN, …` for a `fine_tuning_jobs j` in the FROM clause. */
  select: string;
}

const jobSelects = new WeakMap<DataSource, JobSelect>();

/**
 * The job columns for plain SQL reads, from the entity metadata: explicit columns (never
 * `j.*`), so a column added by a later migration cannot change a prepared statement's
 * result type under a running API.
 */
export function jobSelect(dataSource: DataSource): JobSelect {
  let cached = jobSelects.get(dataSource);
  if (!cached) {
    const columns = dataSource.getMetadata(FineTuningJobEntity).columns.map((column, i) => ({
      property: column.propertyName,
      column: column.databaseName,
      alias: `c${i}`,
    }));
    const select = columns.map((c) => `j."${c.column}" AS ${c.alias}`).join(', ');
    cached = { columns, select };
    jobSelects.set(dataSource, cached);
  }
  return cached;
}

/**
 * A pg row → the entity, as TypeORM would hydrate it: pg already parses jsonb, timestamptz,
 * integer and double precision columns, and this entity has no transformers.
 */
export function hydrateJob(
  row: Record<string, unknown>,
  columns: JobColumn[],
): FineTuningJobEntity {
  const job = new FineTuningJobEntity();
  const target = job as unknown as Record<string, unknown>;
  for (const { property, alias } of columns) target[property] = row[alias];
  return job;
}

/** TypeORM returns `[rows, affected]` for UPDATE … RETURNING on Postgres, plain rows for SELECT. */
export function returningRows<T>(result: unknown): T[] {
  if (
    Array.isArray(result) &&
    result.length === 2 &&
    Array.isArray(result[0]) &&
    typeof result[1] === 'number'
  ) {
    return result[0] as T[];
  }
  return result as T[];
}
