import type { DataSource } from 'typeorm';
import { AdapterEntity } from '../entities';

export class AdaptersRepository {
  constructor(private readonly dataSource: DataSource) {}

  findForTenant(tenantId: string, id: string): Promise<AdapterEntity | null> {
    return this.dataSource.getRepository(AdapterEntity).findOneBy({ tenantId, id });
  }

  /** The safetensors bytes are not selected by default; this reads them. */
  async getWeights(tenantId: string, id: string): Promise<Buffer | null> {
    const row = await this.dataSource
      .getRepository(AdapterEntity)
      .createQueryBuilder('a')
      .addSelect('a.weights')
      .where('a.id = :id AND a.tenant_id = :tenantId', { id, tenantId })
      .getOne();
    return row ? row.weights : null;
  }

  countForJob(jobId: string): Promise<number> {
    return this.dataSource.getRepository(AdapterEntity).countBy({ jobId });
  }
}
