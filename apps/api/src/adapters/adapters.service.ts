import { Injectable } from '@nestjs/common';
import { LineageSchema, type AdapterObject } from '@lorafleet/contracts';
import { AdaptersRepository, type AdapterEntity } from '@lorafleet/db';
import { ApiError } from '../errors/api-error';
import { tarGz } from '../http/tar-gz';

export const ADAPTER_FILES = ['adapter_config.json', 'adapter_model.safetensors'] as const;
export type AdapterFileName = (typeof ADAPTER_FILES)[number];

@Injectable()
export class AdaptersService {
  constructor(private readonly adapters: AdaptersRepository) {}

  async get(tenantId: string, id: string): Promise<AdapterEntity> {
    const adapter = await this.adapters.findForTenant(tenantId, id);
    if (!adapter) throw new ApiError('not_found', `No such adapter: ${id}`, 'adapter_id');
    return adapter;
  }

  async file(
    tenantId: string,
    id: string,
    name: string,
  ): Promise<{ content: Buffer; contentType: string }> {
    const adapter = await this.get(tenantId, id);
    switch (name as AdapterFileName) {
      case 'adapter_config.json':
        return {
          content: Buffer.from(JSON.stringify(adapter.adapterConfig, null, 2) + '\n'),
          contentType: 'application/json',
        };
      case 'adapter_model.safetensors':
        return {
          content: await this.weights(tenantId, id),
          contentType: 'application/octet-stream',
        };
      default:
        throw new ApiError(
          'not_found',
          `Adapters have the files ${ADAPTER_FILES.join(' and ')}; not ${name}`,
          'file',
        );
    }
  }

  /**
   * tar.gz of the PEFT directory plus lorafleet.json lineage (contracts `LineageSchema`, with
   * the adapter record's id, name and weights hash), under `<adapter id>/`.
   */
  async archive(tenantId: string, id: string): Promise<Buffer> {
    const adapter = await this.get(tenantId, id);
    const lineage =
      adapter.lineage === null
        ? null
        : LineageSchema.parse({
            ...adapter.lineage,
            adapter_id: adapter.id,
            fine_tuned_model: adapter.fineTunedModel,
            weights_sha256: adapter.weightsSha256,
          });
    return tarGz([
      {
        name: `${id}/adapter_config.json`,
        content: Buffer.from(JSON.stringify(adapter.adapterConfig, null, 2) + '\n'),
        mtime: adapter.createdAt,
      },
      {
        name: `${id}/adapter_model.safetensors`,
        content: await this.weights(tenantId, id),
        mtime: adapter.createdAt,
      },
      // An adapter stored without lineage has none to give.
      ...(lineage === null
        ? []
        : [
            {
              name: `${id}/lorafleet.json`,
              content: Buffer.from(JSON.stringify(lineage, null, 2) + '\n'),
              mtime: adapter.createdAt,
            },
          ]),
    ]);
  }

  listForTenant(tenantId: string): Promise<AdapterEntity[]> {
    return this.adapters.listForTenant(tenantId);
  }

  findByFineTunedModel(tenantId: string, name: string): Promise<AdapterEntity | null> {
    return this.adapters.findByFineTunedModel(tenantId, name);
  }

  async delete(tenantId: string, id: string): Promise<void> {
    if (!(await this.adapters.deleteForTenant(tenantId, id))) {
      throw new ApiError('not_found', `No such adapter: ${id}`, 'adapter_id');
    }
  }

  present(adapter: AdapterEntity): AdapterObject {
    return {
      id: adapter.id,
      object: 'adapter',
      created_at: Math.floor(adapter.createdAt.getTime() / 1000),
      fine_tuned_model: adapter.fineTunedModel,
      base_model: adapter.baseModel,
      fine_tuning_job_id: adapter.jobId,
      adapter_config: adapter.adapterConfig,
      weights_sha256: adapter.weightsSha256,
      files: [...ADAPTER_FILES],
    };
  }

  private async weights(tenantId: string, id: string): Promise<Buffer> {
    const weights = await this.adapters.getWeights(tenantId, id);
    if (!weights) throw new ApiError('not_found', `No such adapter: ${id}`, 'adapter_id');
    return weights;
  }
}
