import { Controller, Delete, Get, Param, UseGuards } from '@nestjs/common';
import type { AuthenticatedPrincipal } from '@lorafleet/db';
import { AdaptersService } from '../adapters/adapters.service';
import { ApiKeyGuard } from '../auth/api-key.guard';
import { Principal } from '../auth/principal.decorator';
import { ApiError } from '../errors/api-error';
import { ModelsService, type ModelObject } from './models.service';

/** Base models (shared) and this tenant's fine-tuned adapters (`ft:…`), as OpenAI lists them. */
@Controller('v1/models')
@UseGuards(ApiKeyGuard)
export class ModelsController {
  constructor(
    private readonly models: ModelsService,
    private readonly adapters: AdaptersService,
  ) {}

  @Get()
  async list(@Principal() principal: AuthenticatedPrincipal): Promise<{ object: 'list'; data: ModelObject[] }> {
    const fineTuned = (await this.adapters.listForTenant(principal.tenantId)).map((a) =>
      this.models.presentFineTuned(a),
    );
    return { object: 'list', data: [...this.models.listBaseModels(), ...fineTuned] };
  }

  // Model ids may hold a slash (org/name), so match the rest of the path.
  @Get('*')
  async retrieve(@Principal() principal: AuthenticatedPrincipal, @Param('*') id: string): Promise<ModelObject> {
    if (id.startsWith('ft:')) {
      const adapter = await this.adapters.findByFineTunedModel(principal.tenantId, id);
      if (!adapter) throw new ApiError('model_not_found', `The model ${JSON.stringify(id)} does not exist`, 'model');
      return this.models.presentFineTuned(adapter);
    }
    return this.models.present(this.models.resolve(id, 'model'));
  }

  /** Deletes a fine-tuned model (its adapter). Base models cannot be deleted over the API. */
  @Delete('*')
  async delete(
    @Principal() principal: AuthenticatedPrincipal,
    @Param('*') id: string,
  ): Promise<{ id: string; object: 'model'; deleted: true }> {
    if (!id.startsWith('ft:')) {
      throw new ApiError('permission_denied', 'Only fine-tuned models (ft:…) can be deleted', 'model');
    }
    const adapter = await this.adapters.findByFineTunedModel(principal.tenantId, id);
    if (!adapter) throw new ApiError('model_not_found', `The model ${JSON.stringify(id)} does not exist`, 'model');
    await this.adapters.delete(principal.tenantId, adapter.id);
    return { id, object: 'model', deleted: true };
  }
}
