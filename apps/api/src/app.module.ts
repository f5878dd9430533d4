import { type DynamicModule, Module } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import type { ApiEnv } from '@lorafleet/contracts';
import { AdaptersController } from './adapters/adapters.controller';
import { AdaptersService } from './adapters/adapters.service';
import { AdminGuard } from './auth/admin.guard';
import { ApiKeyGuard } from './auth/api-key.guard';
import { CompletionsController } from './completions/completions.controller';
import { CompletionsService } from './completions/completions.service';
import { ServingGateway } from './completions/serving.gateway';
import { WorkersController } from './fleet/workers.controller';
import { ReconcilerService } from './jobs/reconciler.service';
import { API_ENV } from './config/api-env.token';
import { OpenAiExceptionFilter } from './errors/openai-exception.filter';
import { FilesController } from './files/files.controller';
import { FilesService } from './files/files.service';
import { HealthController } from './health/health.controller';
import { InfraModule } from './infra/infra.module';
import { JobEstimateController } from './jobs/job-estimate.controller';
import { JobEstimateService } from './jobs/job-estimate.service';
import { JobsController } from './jobs/jobs.controller';
import { JobsService } from './jobs/jobs.service';
import { OutboxRelayService } from './jobs/outbox-relay.service';
import { ModelsController } from './models/models.controller';
import { ModelsService } from './models/models.service';
import { OpsModule } from './ops/ops.module';
import { WebhookDispatcherService } from './webhooks/webhook-dispatcher.service';
import { WebhooksController } from './webhooks/webhooks.controller';
import { WebhooksService } from './webhooks/webhooks.service';

@Module({})
export class AppModule {
  /** The whole API, configured by an already-validated environment. */
  static forEnv(env: ApiEnv): DynamicModule {
    const envModule: DynamicModule = {
      module: class ApiEnvModule {},
      global: true,
      providers: [{ provide: API_ENV, useValue: env }],
      exports: [API_ENV],
    };
    return {
      module: AppModule,
      imports: [envModule, InfraModule, OpsModule],
      controllers: [
        HealthController,
        FilesController,
        ModelsController,
        JobsController,
        JobEstimateController,
        AdaptersController,
        WorkersController,
        CompletionsController,
        WebhooksController,
      ],
      providers: [
        { provide: APP_FILTER, useClass: OpenAiExceptionFilter },
        ApiKeyGuard,
        AdminGuard,
        AdaptersService,
        ReconcilerService,
        FilesService,
        ModelsService,
        JobsService,
        JobEstimateService,
        OutboxRelayService,
        CompletionsService,
        ServingGateway,
        WebhooksService,
        WebhookDispatcherService,
      ],
    };
  }
}
