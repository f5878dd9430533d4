import type { DataSource } from 'typeorm';
import { TenantEntity } from '../entities';
import { newId } from '../ids';

/** Tenants; their API keys are `ApiKeysRepository`'s. */
export class TenantsRepository {
  constructor(private readonly dataSource: DataSource) {}

  async createTenant(name: string): Promise<TenantEntity> {
    const repo = this.dataSource.getRepository(TenantEntity);
    return repo.save(repo.create({ id: newId('tenant'), name }));
  }

  /** Tenants whose id or name is `nameOrId` (names are not unique), oldest first. */
  findByNameOrId(nameOrId: string): Promise<TenantEntity[]> {
    return this.dataSource
      .getRepository(TenantEntity)
      .find({ where: [{ id: nameOrId }, { name: nameOrId }], order: { createdAt: 'ASC' } });
  }
}
