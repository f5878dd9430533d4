import { IsNull, type DataSource } from 'typeorm';
import { OutboxEntity } from '../entities';

export class OutboxRepository {
  constructor(private readonly dataSource: DataSource) {}

  /** Oldest undispatched entries first. */
  pending(limit: number): Promise<OutboxEntity[]> {
    return this.dataSource
      .getRepository(OutboxEntity)
      .find({ where: { dispatchedAt: IsNull() }, order: { id: 'ASC' }, take: limit });
  }

  async markDispatched(id: string): Promise<void> {
    await this.dataSource
      .getRepository(OutboxEntity)
      .update({ id, dispatchedAt: IsNull() }, { dispatchedAt: new Date() });
  }

  async recordFailure(id: string, error: string): Promise<void> {
    await this.dataSource
      .getRepository(OutboxEntity)
      .createQueryBuilder()
      .update()
      .set({ attempts: () => 'attempts + 1', lastError: error.slice(0, 2000) })
      .where('id = :id', { id })
      .execute();
  }
}
