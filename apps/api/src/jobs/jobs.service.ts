import { Inject, Injectable } from '@nestjs/common';
import {
  CreateFineTuningJobRequestSchema,
  DEFAULT_BASE_LEARNING_RATE,
  HyperparametersSchema,
  JobStatusSchema,
  LoraConfigSchema,
  QUEUE_NAMES,
  TrainingOptionsSchema,
  resolveHyperparameters,
  type ApiEnv,
  type FineTuneJobPayload,
  type FineTuningJob,
  type FineTuningJobEvent,
} from '@lorafleet/contracts';
import { FilesRepository, JobsRepository, type FileEntity } from '@lorafleet/db';
import { randomInt } from 'node:crypto';
import { API_ENV } from '../config/api-env.token';
import { ApiError } from '../errors/api-error';
import { ModelsService } from '../models/models.service';
import { OutboxRelayService } from './outbox-relay.service';
import { presentEvent, presentJob } from './job.presenter';

export interface ListJobsQuery {
  after?: string;
  limit?: string;
  status?: string;
  metadata?: Record<string, string>;
}

@Injectable()
export class JobsService {
  constructor(
    private readonly jobs: JobsRepository,
    private readonly files: FilesRepository,
    private readonly models: ModelsService,
    private readonly relay: OutboxRelayService,
    @Inject(API_ENV) private readonly env: ApiEnv,
  ) {}

  async create(tenantId: string, body: unknown): Promise<FineTuningJob> {
    const request = CreateFineTuningJobRequestSchema.parse(body);
    this.models.resolve(request.model, 'model');
    const trainingFile = await this.usableFile(tenantId, request.training_file, 'training_file');
    if (request.validation_file) {
      await this.usableFile(tenantId, request.validation_file, 'validation_file');
    }
    const hyperparameters = resolveHyperparameters(
      HyperparametersSchema.parse(
        request.method?.supervised?.hyperparameters ?? request.hyperparameters ?? {},
      ),
      trainingFile.exampleCount,
    );
    const training = TrainingOptionsSchema.parse(request.training ?? {});
    const job = await this.jobs.createWithOutbox(
      {
        tenantId,
        model: request.model,
        trainingFileId: request.training_file,
        validationFileId: request.validation_file ?? null,
        suffix: request.suffix ?? null,
        seed: request.seed ?? randomInt(0, 2_147_483_647),
        metadata: request.metadata ?? null,
        hyperparameters,
        lora: LoraConfigSchema.parse(request.lora ?? {}),
        training,
        learningRate:
          training.learning_rate ??
          hyperparameters.learning_rate_multiplier * DEFAULT_BASE_LEARNING_RATE,
        idempotencyKey: null,
        requestHash: null,
      },
      QUEUE_NAMES.fineTune,
      (jobId): FineTuneJobPayload => ({ schemaVersion: 1, jobId, tenantId }),
    );
    // The row and outbox entry are committed; enqueue now for low latency. If Redis is down
    // the relay's next pass retries, so the 201 stands either way (R1, R4).
    this.relay.kick();
    return presentJob(job);
  }

  async get(tenantId: string, id: string): Promise<FineTuningJob> {
    const job = await this.jobs.findForTenant(tenantId, id);
    if (!job)
      throw new ApiError('not_found', `No such fine-tuning job: ${id}`, 'fine_tuning_job_id');
    return presentJob(job);
  }

  async list(tenantId: string, query: ListJobsQuery) {
    const limit = this.parseLimit(query.limit);
    const status = query.status === undefined ? undefined : JobStatusSchema.safeParse(query.status);
    if (status && !status.success) {
      throw new ApiError('invalid_request', `Unknown status filter: ${query.status}`, 'status');
    }
    const rows = await this.jobs.listForTenant(tenantId, {
      after: query.after,
      limit: limit + 1,
      status: status?.data,
      metadata: query.metadata,
    });
    return {
      object: 'list' as const,
      data: rows.slice(0, limit).map(presentJob),
      has_more: rows.length > limit,
    };
  }

  async events(
    tenantId: string,
    id: string,
    after: string | undefined,
    limitText: string | undefined,
  ) {
    await this.get(tenantId, id);
    const limit = this.parseLimit(limitText);
    const cursor = after?.startsWith('ftevent-') ? after.slice('ftevent-'.length) : after;
    if (cursor !== undefined && !/^\d+$/.test(cursor)) {
      throw new ApiError('invalid_request', `Invalid cursor: ${after}`, 'after');
    }
    const rows = await this.jobs.listEvents(id, cursor, limit + 1);
    const data: FineTuningJobEvent[] = rows.slice(0, limit).map(presentEvent);
    return { object: 'list' as const, data, has_more: rows.length > limit };
  }

  async cancel(tenantId: string, id: string): Promise<FineTuningJob> {
    const job = await this.jobs.findForTenant(tenantId, id);
    if (!job)
      throw new ApiError('not_found', `No such fine-tuning job: ${id}`, 'fine_tuning_job_id');
    const cancelled = await this.jobs.transition(id, {
      from: ['validating_files', 'queued', 'running', 'paused'],
      to: 'cancelled',
      message: 'Fine-tuning job cancelled',
      set: { cancelRequestedAt: new Date(), leaseToken: null },
    });
    if (!cancelled) {
      throw new ApiError(
        'invalid_state',
        `Job ${id} is already ${job.status} and cannot be cancelled`,
      );
    }
    return this.get(tenantId, id);
  }

  private async usableFile(tenantId: string, fileId: string, param: string): Promise<FileEntity> {
    const file = await this.files.findForTenant(tenantId, fileId);
    if (!file) throw new ApiError('invalid_request', `No such file: ${fileId}`, param);
    if (file.status !== 'processed') {
      throw new ApiError(
        'invalid_file',
        `File ${fileId} failed validation and cannot be used: ${file.statusDetails ?? file.status}`,
        param,
      );
    }
    return file;
  }

  private parseLimit(text: string | undefined): number {
    if (text === undefined) return 20;
    const limit = Number(text);
    if (!Number.isInteger(limit) || limit < 1 || limit > 100) {
      throw new ApiError('invalid_request', 'limit must be an integer from 1 to 100', 'limit');
    }
    return limit;
  }
}
