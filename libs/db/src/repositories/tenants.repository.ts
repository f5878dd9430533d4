import { randomBytes } from 'node:crypto';
import { IsNull, type DataSource } from 'typeorm';
import { ApiKeyEntity, TenantEntity } from '../entities';
import { newId, sha256Hex } from '../ids';

export interface IssuedApiKey {
  apiKey: ApiKeyEntity;
  /** The only time the plaintext exists outside the client. */
  plaintext: string;
}

export interface AuthenticatedPrincipal {
  tenantId: string;
  apiKeyId: string;
  isAdmin: boolean;
}

export class TenantsRepository {
  constructor(private readonly dataSource: DataSource) {}

  async createTenant(name: string): Promise<TenantEntity> {
    const repo = this.dataSource.getRepository(TenantEntity);
    return repo.save(repo.create({ id: newId('tenant'), name }));
  }

  async issueApiKey(tenantId: string, options: { isAdmin?: boolean } = {}): Promise<IssuedApiKey> {
    const plaintext = `lf-${randomBytes(32).toString('base64url')}`;
    const repo = this.dataSource.getRepository(ApiKeyEntity);
    const apiKey = await repo.save(
      repo.create({
        id: newId('apiKey'),
        tenantId,
        keyHash: sha256Hex(plaintext),
        keyPrefix: plaintext.slice(0, 7),
        isAdmin: options.isAdmin ?? false,
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
    const key = await this.dataSource
      .getRepository(ApiKeyEntity)
      .findOne({ where: { keyHash: sha256Hex(plaintext), revokedAt: IsNull() } });
    return key ? { tenantId: key.tenantId, apiKeyId: key.id, isAdmin: key.isAdmin } : null;
  }

  async revokeApiKey(apiKeyId: string): Promise<boolean> {
    const result = await this.dataSource
      .getRepository(ApiKeyEntity)
      .update({ id: apiKeyId, revokedAt: IsNull() }, { revokedAt: new Date() });
    return (result.affected ?? 0) > 0;
  }
}
