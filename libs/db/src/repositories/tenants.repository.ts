import { randomBytes } from 'node:crypto';
import { IsNull, type DataSource } from 'typeorm';
import { ApiKeyEntity, TenantEntity } from '../entities';
import { newId, sha256Hex } from '../ids';
import { pgPool } from '../pg-pool';

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
export interface PrincipalRow {
  tenant_id: string;
  id: string;
  is_admin: boolean;
  is_fleet_admin: boolean;
}

export function principalFromRow(row: PrincipalRow): AuthenticatedPrincipal {
  return {
    tenantId: row.tenant_id,
    apiKeyId: row.id,
    isAdmin: row.is_admin || row.is_fleet_admin,
    isFleetAdmin: row.is_fleet_admin,
  };
}

export class TenantsRepository {
  constructor(private readonly dataSource: DataSource) {}

  async createTenant(name: string): Promise<TenantEntity> {
    const repo = this.dataSource.getRepository(TenantEntity);
    return repo.save(repo.create({ id: newId('tenant'), name }));
  }

  /** `isAdmin`: a tenant admin key; `isFleetAdmin`: a fleet admin key (also an admin). */
  async issueApiKey(
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
    // Every /v1 request runs this: a named prepared statement on the pg pool, no query
    // builder, no entity. Not cached, so a revoked key fails on its next request (R20).
    const { rows } = await pgPool(this.dataSource).query<PrincipalRow>({
      name: 'lorafleet_authenticate_v2',
      text: `SELECT tenant_id, id, is_admin, is_fleet_admin FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL`,
      values: [sha256Hex(plaintext)],
    });
    return rows.length > 0 ? principalFromRow(rows[0]) : null;
  }

  /** Tenants whose id or name is `nameOrId` (names are not unique), oldest first. */
  findByNameOrId(nameOrId: string): Promise<TenantEntity[]> {
    return this.dataSource
      .getRepository(TenantEntity)
      .find({ where: [{ id: nameOrId }, { name: nameOrId }], order: { createdAt: 'ASC' } });
  }

  /** A key by its id (`key-…`) or by its plaintext (matched through the digest), revoked or not. */
  findApiKey(keyOrId: string): Promise<ApiKeyEntity | null> {
    return this.dataSource
      .getRepository(ApiKeyEntity)
      .findOne({ where: [{ id: keyOrId }, { keyHash: sha256Hex(keyOrId) }] });
  }

  /** Revokes a key at once (R20); false when it does not exist or was already revoked. */
  async revokeApiKey(apiKeyId: string): Promise<boolean> {
    const result = await this.dataSource
      .getRepository(ApiKeyEntity)
      .update({ id: apiKeyId, revokedAt: IsNull() }, { revokedAt: new Date() });
    return (result.affected ?? 0) > 0;
  }
}
