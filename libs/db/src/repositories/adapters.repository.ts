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

  findByFineTunedModel(tenantId: string, fineTunedModel: string): Promise<AdapterEntity | null> {
    return this.dataSource.getRepository(AdapterEntity).findOneBy({ tenantId, fineTunedModel });
  }

  listForTenant(tenantId: string): Promise<AdapterEntity[]> {
    return this.dataSource
      .getRepository(AdapterEntity)
      .find({ where: { tenantId }, order: { createdAt: 'DESC' } });
  }

  async deleteForTenant(tenantId: string, id: string): Promise<boolean> {
    const result = await this.dataSource.getRepository(AdapterEntity).delete({ tenantId, id });
    return (result.affected ?? 0) > 0;
  }

  countForJob(jobId: string): Promise<number> {
    return this.dataSource.getRepository(AdapterEntity).countBy({ jobId });
  }
}
