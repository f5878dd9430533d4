import type { DataSource } from 'typeorm';
import { AdapterEntity } from '../entities';
import type { JsonObject } from '../entities/json';

/** What a serving worker needs to decode with an adapter (issue 19). */
export interface ServingAdapterRow {
  id: string;
  baseModel: string;
  adapterConfig: JsonObject;
  /** PEFT `adapter_model.safetensors` bytes. */
  weights: Buffer;
  /** The sha256 of the base weights it was trained on (lineage), null when not recorded. */
  baseModelSha256: string | null;
}

/**
 * Adapter lookups of the serving path. The worker reads by id only: the API already checked
 * the tenant when it resolved the `ft:` name, and put the id on the request.
 */
export class ServingAdaptersRepository {
  constructor(private readonly dataSource: DataSource) {}

  async findForServing(id: string): Promise<ServingAdapterRow | null> {
    const row = await this.dataSource.getRepository(AdapterEntity).findOne({
      select: {
        id: true,
        baseModel: true,
        adapterConfig: true,
        weights: true, // not selected by default
        lineage: true,
      },
      where: { id },
    });
    if (!row) return null;
    const sha = row.lineage?.base_model_sha256;
    return {
      id: row.id,
      baseModel: row.baseModel,
      adapterConfig: row.adapterConfig,
      weights: row.weights,
      baseModelSha256: typeof sha === 'string' ? sha : null,
    };
  }
}
