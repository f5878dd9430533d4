import { randomBytes } from 'node:crypto';
import { IsNull, type DataSource } from 'typeorm';
import { ApiKeyEntity, type FineTuningJobEntity } from '../entities';
import { newId, sha256Hex } from '../ids';
import { preparedQuery } from '../pg-pool';
import { hydrateJob, jobSelect, type JobColumn } from './job-rows';

export interface IssuedApiKey {
  apiKey: ApiKeyEntity;
  /** The only time the plaintext exists outside the client. */
  plaintext: string;
}

export interface AuthenticatedPrincipal {
  tenantId: string;
  apiKeyId: string;
  /** Tenant admin or fleet admin. */
  isAdmin: boolean;
  /** Fleet admin: sees every tenant's jobs on the fleet routes. */
  isFleetAdmin: boolean;
}

/** The api_keys columns a principal is made of. */
interface PrincipalRow {
  tenant_id: string;
  id: string;
  is_admin: boolean;
  is_fleet_admin: boolean;
}

function principalFromRow(row: PrincipalRow): AuthenticatedPrincipal {
  return {
    tenantId: row.tenant_id,
    apiKeyId: row.id,
    isAdmin: row.is_admin || row.is_fleet_admin,
    isFleetAdmin: row.is_fleet_admin,
  };
}

interface JobForKeyRead {
  sql: string;
  columns: JobColumn[];
}

/**
 * API keys: issued and revoked by admins, resolved to a principal on every /v1 request. Only
 * the sha256 digest of a key is stored (R20).
 */
export class ApiKeysRepository {
  constructor(private readonly dataSource: DataSource) {}

  /** `isAdmin`: a tenant admin key; `isFleetAdmin`: a fleet admin key (also an admin). */
  async issue(
    tenantId: string,
    options: { isAdmin?: boolean; isFleetAdmin?: boolean } = {},
  ): Promise<IssuedApiKey> {
    const plaintext = `lf-${randomBytes(32).toString('base64url')}`;
    const repo = this.dataSource.getRepository(ApiKeyEntity);
    const apiKey = await repo.save(
      repo.create({
        id: newId('apiKey'),
        tenantId,
        keyHash: sha256Hex(plaintext),
        keyPrefix: plaintext.slice(0, 7),
        isAdmin: (options.isAdmin ?? false) || (options.isFleetAdmin ?? false),
        isFleetAdmin: options.isFleetAdmin ?? false,
        revokedAt: null,
      }),
    );
    return { apiKey, plaintext };
  }

  /**
   * Looks a presented key up by its sha256 digest (R20). The database compares digests, not
   * secrets, so response time reveals nothing about the stored key's plaintext.
   */
  async authenticate(plaintext: string): Promise<AuthenticatedPrincipal | null> {
    // Every /v1 request runs this (a hot read). Not cached, so a revoked key fails on its
    // next request (R20).
    const rows = await preparedQuery<PrincipalRow>(
      this.dataSource,
      'authenticate',
      'SELECT tenant_id, id, is_admin, is_fleet_admin FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL',
      [sha256Hex(plaintext)],
    );
    return rows.length > 0 ? principalFromRow(rows[0]) : null;
  }

  /**
   * The hot path of `GET /v1/fine_tuning/jobs/{id}`: the API key check and the tenant-scoped
   * job read in one round trip, a hot read (no TypeORM hydration). Null when the key is unknown or revoked; `job` is null
   * when the key is good but the tenant has no such job. Nothing is cached: every call reads
   * the key and the row as Postgres has them now (R20, never staler than the database).
   */
  async authenticateWithJob(
    plaintext: string,
    jobId: string,
  ): Promise<{ principal: AuthenticatedPrincipal; job: FineTuningJobEntity | null } | null> {
    const read = this.jobForKeyRead();
    const rows = await preparedQuery<Record<string, unknown>>(
      this.dataSource,
      'job_for_key',
      read.sql,
      [sha256Hex(plaintext), jobId],
    );
    if (rows.length === 0) return null;
    const row = rows[0];
    const principal = principalFromRow({
      tenant_id: row.__key_tenant_id as string,
      id: row.__key_id as string,
      is_admin: row.__key_is_admin as boolean,
      is_fleet_admin: row.__key_is_fleet_admin as boolean,
    });
    if (row.__job_found !== true) return { principal, job: null };
    return { principal, job: hydrateJob(row, read.columns) };
  }

  private jobForKeyReadCache?: JobForKeyRead;

  /** SQL and column map of `authenticateWithJob`, built once from the entity metadata. */
  private jobForKeyRead(): JobForKeyRead {
    if (this.jobForKeyReadCache) return this.jobForKeyReadCache;
    const { columns, select } = jobSelect(this.dataSource);
    const sql = `SELECT k.tenant_id AS __key_tenant_id, k.id AS __key_id, k.is_admin AS __key_is_admin,
            k.is_fleet_admin AS __key_is_fleet_admin, j.id IS NOT NULL AS __job_found, ${select}
       FROM api_keys k
       LEFT JOIN fine_tuning_jobs j ON j.id = $2 AND j.tenant_id = k.tenant_id
      WHERE k.key_hash = $1 AND k.revoked_at IS NULL`;
    this.jobForKeyReadCache = { sql, columns };
    return this.jobForKeyReadCache;
  }

  /** A key by its id (`key-…`) or by its plaintext (matched through the digest), revoked or not. */
  find(keyOrId: string): Promise<ApiKeyEntity | null> {
    return this.dataSource
      .getRepository(ApiKeyEntity)
      .findOne({ where: [{ id: keyOrId }, { keyHash: sha256Hex(keyOrId) }] });
  }

  /** Revokes a key at once (R20); false when it does not exist or was already revoked. */
  async revoke(apiKeyId: string): Promise<boolean> {
    const result = await this.dataSource
      .getRepository(ApiKeyEntity)
      .update({ id: apiKeyId, revokedAt: IsNull() }, { revokedAt: new Date() });
    return (result.affected ?? 0) > 0;
  }
}
