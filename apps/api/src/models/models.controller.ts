import { Controller, Get, Param, UseGuards } from '@nestjs/common';
import { ApiKeyGuard } from '../auth/api-key.guard';
import { ModelsService, type ModelObject } from './models.service';

@Controller('v1/models')
@UseGuards(ApiKeyGuard)
export class ModelsController {
  constructor(private readonly models: ModelsService) {}

  @Get()
  list(): { object: 'list'; data: ModelObject[] } {
    return { object: 'list', data: this.models.listBaseModels() };
  }

  // Model ids may hold one slash (org/name), so match the rest of the path.
  @Get('*')
  retrieve(@Param('*') id: string): ModelObject {
    return this.models.present(this.models.resolve(id, 'model'));
  }
}
