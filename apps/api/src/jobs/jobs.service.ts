import { Inject, Injectable } from '@nestjs/common';
import {
  CreateFineTuningJobRequestSchema,
  JobStatusSchema,
  fineTuneDelivery,
  type ApiEnv,
  type CreateFineTuningJobRequest,
  type FileKind,
  type FineTuneSpec,
  type FineTuningJob,
  type FineTuningJobEvent,
  type LoraConfigDto,
} from '@lorafleet/contracts';
import {
  FineTuneSpecError,
  resolveFineTuneSpec,
  validateJsonl,
  unknownTargetModules,
  type BaseModelEntry,
  type ModelFacts,
} from '@lorafleet/data';
import {
  ActiveJobQuotaError,
  ApiKeysRepository,
  CheckpointsRepository,
  FilesRepository,
  JobEventsRepository,
  JobsRepository,
  sha256Hex,
  type FileEntity,
  type FineTuningJobEntity,
} from '@lorafleet/db';
import { BAD_KEY_MESSAGE, type DeferredApiKey } from '../auth/api-key.guard';
import { API_ENV } from '../config/api-env.token';
import { ApiError } from '../errors/api-error';
import { assertWellFormedText } from '../http/well-formed-text';
import { ModelsService } from '../models/models.service';
import { OutboxRelayService } from './outbox-relay.service';
import { presentEvent, presentJob } from './job.presenter';

/** JSON with sorted keys, so equal bodies hash equally whatever their key order. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

function isUniqueViolation(error: unknown): boolean {
  const driverError = (error as { driverError?: { code?: string }; code?: string } | null) ?? {};
  return (driverError.driverError?.code ?? driverError.code) === '23505';
}

/** How errors name a file's kind of data. */
const KIND_NAMES: Record<FileKind, string> = {
  sft: 'supervised examples (messages, prompt/completion or text lines)',
  preference: 'preference pairs (input, preferred_output, non_preferred_output)',
};

/** How many of a job's newest checkpoints a checkpoint cursor (`after`) is looked up among. */
const CHECKPOINT_CURSOR_SCAN = 1000;

/** A create body that passed every check `create` makes, resolved; nothing is stored yet. */
export interface ResolvedJobRequest {
  request: CreateFineTuningJobRequest;
  baseModel: BaseModelEntry;
  baseModelHash: string;
  facts: ModelFacts;
  trainingFile: FileEntity;
  spec: FineTuneSpec;
  /** The body's hash, when an Idempotency-Key came with it. */
  requestHash: string | null;
}

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
    private readonly jobEvents: JobEventsRepository,
    private readonly jobCheckpoints: CheckpointsRepository,
    private readonly apiKeys: ApiKeysRepository,
    private readonly files: FilesRepository,
    private readonly models: ModelsService,
    private readonly relay: OutboxRelayService,
    @Inject(API_ENV) private readonly env: ApiEnv,
  ) {}

  /**
   * Creates a job. With an Idempotency-Key (R2) the same key and body replay the first job
   * (`replayed: true`), the same key with another body is a 422, and concurrent duplicates
   * meet at the unique (tenant, key) index so exactly one job is created.
   */
  async create(
    tenantId: string,
    body: unknown,
    idempotencyKey?: string,
  ): Promise<{ job: FineTuningJob; replayed: boolean }> {
    const resolved = await this.resolveRequest(tenantId, body, idempotencyKey);
    if ('replay' in resolved) return { job: resolved.replay, replayed: true };
    const { request, baseModelHash, spec, requestHash } = resolved;
    let job;
    try {
      job = await this.jobs.createWithOutbox(
        {
          tenantId,
          model: request.model,
          baseModelHash,
          trainingFileId: request.training_file,
          validationFileId: request.validation_file ?? null,
          suffix: request.suffix ?? null,
          metadata: request.metadata ?? null,
          spec,
          idempotencyKey: idempotencyKey ?? null,
          requestHash,
        },
        (jobId) => fineTuneDelivery({ id: jobId, tenantId }),
        // Counted under a lock on the tenant's row, in the insert's transaction (R21).
        { maxActiveJobs: this.env.LORAFLEET_MAX_ACTIVE_JOBS_PER_TENANT },
      );
    } catch (error) {
      if (error instanceof ActiveJobQuotaError) {
        // A concurrent duplicate of this request may be the job that filled the quota.
        const replay = idempotencyKey
          ? await this.replay(tenantId, idempotencyKey, requestHash!)
          : null;
        if (replay) return { job: replay, replayed: true };
        throw new ApiError(
          'rate_limit_exceeded',
          `This organization already has ${error.limit} active fine-tuning jobs; wait for one to finish or cancel one`,
        );
      }
      // A concurrent request with the same key won the unique index: replay its job.
      if (idempotencyKey && isUniqueViolation(error)) {
        const replay = await this.replay(tenantId, idempotencyKey, requestHash!);
        if (replay) return { job: replay, replayed: true };
      }
      throw error;
    }
    // The row and outbox entry are committed; enqueue now for low latency. If Redis is down
    // the relay's next pass retries, so the 201 stands either way (R1, R4).
    this.relay.kick();
    return { job: presentJob(job), replayed: false };
  }

  /**
   * Every check `create` makes, and the body resolved into the job's spec, with nothing
   * stored: `POST /v1/fine_tuning/jobs/estimate` (issue 20) answers the same 4xx for the same
   * body because it runs this same code.
   */
  async validate(tenantId: string, body: unknown): Promise<ResolvedJobRequest> {
    const resolved = await this.resolveRequest(tenantId, body);
    if ('replay' in resolved) throw new Error('unreachable: a replay needs an Idempotency-Key');
    return resolved;
  }

  /** `create`'s checks and resolution; with an Idempotency-Key seen before, the first job. */
  private async resolveRequest(
    tenantId: string,
    body: unknown,
    idempotencyKey?: string,
  ): Promise<ResolvedJobRequest | { replay: FineTuningJob }> {
    const request = CreateFineTuningJobRequestSchema.parse(body);
    assertWellFormedText(request);
    const method = request.method ?? { type: 'supervised' as const };
    if (method.type === 'reinforcement') {
      // OpenAI's reinforcement fine-tuning needs graders lorafleet does not have.
      throw new ApiError(
        'invalid_request',
        'method.type "reinforcement" is not supported; lorafleet trains "supervised" and "dpo" methods',
        'method.type',
      );
    }
    const { beta, ...methodHyperparameters } =
      method.type === 'dpo'
        ? (method.dpo?.hyperparameters ?? {})
        : { beta: undefined, ...method.supervised?.hyperparameters };
    const methodParam = `method.${method.type}.hyperparameters`;
    const methodGaveHyperparameters =
      method.type === 'dpo' ? !!method.dpo?.hyperparameters : !!method.supervised?.hyperparameters;
    if (
      request.hyperparameters &&
      methodGaveHyperparameters &&
      canonicalJson(request.hyperparameters) !== canonicalJson(methodHyperparameters)
    ) {
      // OpenAI deprecated the top-level object for `method`; two different answers to one
      // question must not be settled by silently picking one.
      throw new ApiError(
        'invalid_request',
        `hyperparameters and ${methodParam} differ; send one of them`,
        methodParam,
      );
    }
    if (idempotencyKey !== undefined && !/^[\x21-\x7e]{1,255}$/.test(idempotencyKey)) {
      throw new ApiError(
        'invalid_request',
        'Idempotency-Key must be 1-255 visible ASCII characters',
        'Idempotency-Key',
      );
    }
    const requestHash = idempotencyKey ? sha256Hex(canonicalJson(request)) : null;
    if (idempotencyKey) {
      const replay = await this.replay(tenantId, idempotencyKey, requestHash!);
      if (replay) return { replay };
    }
    const baseModel = this.models.resolve(request.model, 'model');
    const baseModelHash = await this.models.contentHash(baseModel);
    const facts = this.models.facts(baseModel);
    this.checkTargetModules(request.model, facts, request.lora?.target_modules);
    const kind: FileKind = method.type === 'dpo' ? 'preference' : 'sft';
    const trainingFile = await this.usableFile(
      tenantId,
      request.training_file,
      'training_file',
      method.type,
      kind,
    );
    if (request.validation_file) {
      await this.usableFile(
        tenantId,
        request.validation_file,
        'validation_file',
        method.type,
        kind,
      );
    }
    let spec;
    try {
      spec = resolveFineTuneSpec(
        {
          seed: request.seed,
          method: method.type === 'dpo' ? { type: 'dpo', beta } : { type: 'supervised' },
          hyperparameters: methodGaveHyperparameters
            ? methodHyperparameters
            : request.hyperparameters,
          lora: request.lora,
          training: request.training,
        },
        {
          model: request.model,
          contextLength: facts.contextLength,
          trainingExamples: trainingFile.exampleCount,
          baseLearningRate: facts.defaultLearningRate,
        },
      );
    } catch (error) {
      // The worker would fail every attempt on this; say so now (R13: bad input never retries).
      if (error instanceof FineTuneSpecError)
        throw new ApiError('invalid_request', error.message, error.param);
      throw error;
    }
    return { request, baseModel, baseModelHash, facts, trainingFile, spec, requestHash };
  }

  private async replay(
    tenantId: string,
    key: string,
    requestHash: string,
  ): Promise<FineTuningJob | null> {
    const existing = await this.jobs.findByIdempotencyKey(tenantId, key);
    if (!existing) return null;
    if (existing.requestHash !== requestHash) {
      throw new ApiError(
        'idempotency_mismatch',
        'This Idempotency-Key was already used with a different request body',
        'Idempotency-Key',
      );
    }
    return presentJob(existing);
  }

  async pause(tenantId: string, id: string): Promise<FineTuningJob> {
    const job = await this.owned(tenantId, id);
    if (job.status === 'paused') return presentJob(job);
    if (job.status !== 'running' || !(await this.jobs.requestPause(id))) {
      throw new ApiError(
        'invalid_state',
        `Only running jobs can be paused; job ${id} is ${job.status}`,
      );
    }
    return this.get(tenantId, id);
  }

  async resume(tenantId: string, id: string): Promise<FineTuningJob> {
    const job = await this.owned(tenantId, id);
    const resumed = await this.jobs.requeue(
      id,
      { from: ['paused'], message: 'Fine-tuning job resumed' },
      fineTuneDelivery({ id, tenantId }),
    );
    if (!resumed)
      throw new ApiError(
        'invalid_state',
        `Only paused jobs can be resumed; job ${id} is ${job.status}`,
      );
    this.relay.kick();
    return this.get(tenantId, id);
  }

  async checkpoints(tenantId: string, id: string, limitText: string | undefined, after?: string) {
    const job = await this.owned(tenantId, id);
    const limit = this.parseLimit(limitText);
    let rows = await this.jobCheckpoints.listCheckpoints(
      id,
      after === undefined ? limit + 1 : CHECKPOINT_CURSOR_SCAN,
    );
    if (after !== undefined) {
      // The openai client pages with `after` = the last id it saw; ignoring it would make its
      // auto-pagination loop forever. The repository pages by count only, and a job keeps
      // few checkpoints, so the cursor is found among the job's newest ones.
      const at = rows.findIndex((c) => c.id === after);
      if (at < 0) throw new ApiError('invalid_request', `Unknown cursor: ${after}`, 'after');
      rows = rows.slice(at + 1, at + 2 + limit);
    }
    return {
      object: 'list' as const,
      data: rows.slice(0, limit).map((c) => ({
        id: c.id,
        object: 'fine_tuning.job.checkpoint' as const,
        created_at: Math.floor(c.createdAt.getTime() / 1000),
        fine_tuned_model_checkpoint: `${job.fineTunedModel ?? `ft:${job.model}:${job.tenantId}:${job.suffix ?? ''}:${job.id}`}:ckpt-step-${c.step}`,
        fine_tuning_job_id: id,
        step_number: c.step,
        metrics: c.metrics ?? {},
        bytes: c.bytes,
      })),
      has_more: rows.length > limit,
    };
  }

  private async owned(tenantId: string, id: string): Promise<FineTuningJobEntity> {
    const job = await this.jobs.findForTenant(tenantId, id);
    if (!job)
      throw new ApiError('not_found', `No such fine-tuning job: ${id}`, 'fine_tuning_job_id');
    return job;
  }

  /**
   * `GET /v1/fine_tuning/jobs/{id}`: key and tenant-scoped job in one query. Reports the
   * principal back to the key once it resolved, before a 404 too (the request log names it).
   */
  async getWithApiKey(apiKey: DeferredApiKey, id: string): Promise<FineTuningJob> {
    const found = await this.apiKeys.authenticateWithJob(apiKey.plaintext, id);
    if (!found) throw new ApiError('invalid_api_key', BAD_KEY_MESSAGE);
    apiKey.resolvedTo(found.principal);
    if (!found.job)
      throw new ApiError('not_found', `No such fine-tuning job: ${id}`, 'fine_tuning_job_id');
    return presentJob(found.job);
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
    // Event ids are per-job ordinals; 15 digits stay far inside Postgres' bigint (and a
    // JavaScript number), so an out-of-range cursor is a 400, not a database error.
    if (cursor !== undefined && !/^[1-9]\d{0,14}$/.test(cursor)) {
      throw new ApiError('invalid_request', `Invalid cursor: ${after}`, 'after');
    }
    const rows = await this.jobEvents.listEvents(
      id,
      cursor === undefined ? undefined : Number(cursor),
      limit + 1,
    );
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

  /** Unknown `lora.target_modules` entries are a 400 naming the modules the model has. */
  private checkTargetModules(
    model: string,
    facts: ModelFacts,
    targetModules: LoraConfigDto['target_modules'],
  ): void {
    if (targetModules === undefined || targetModules === 'all-linear') return;
    const unknown = unknownTargetModules(facts, targetModules);
    if (unknown.length > 0) {
      throw new ApiError(
        'invalid_request',
        `lora.target_modules ${unknown.map((m) => JSON.stringify(m)).join(', ')} match no module of ${model} (${facts.modelType}); its linear modules are: ${facts.moduleNames.join(', ')}`,
        'lora.target_modules',
      );
    }
  }

  /**
   * The file, if the tenant's, uploaded for fine-tuning, valid and holding the `kind` of data
   * the job's method trains on.
   */
  private async usableFile(
    tenantId: string,
    fileId: string,
    param: string,
    methodType: string,
    kind: FileKind,
  ): Promise<FileEntity> {
    const file = await this.files.findForTenant(tenantId, fileId);
    if (!file) throw new ApiError('invalid_request', `No such file: ${fileId}`, param);
    if (file.purpose !== 'fine-tune') {
      // A job's results file (metrics CSV) is not training data.
      throw new ApiError(
        'invalid_file',
        `File ${fileId} has purpose ${JSON.stringify(file.purpose)}; jobs take files uploaded with purpose "fine-tune"`,
        param,
      );
    }
    if (file.status !== 'processed') {
      throw new ApiError(
        'invalid_file',
        `File ${fileId} failed validation and cannot be used: ${file.statusDetails ?? file.status}`,
        param,
      );
    }
    const fileKind = file.kind ?? (await this.recordKind(tenantId, file, param));
    if (fileKind !== kind) {
      throw new ApiError(
        'invalid_file',
        `File ${fileId} holds ${KIND_NAMES[fileKind]}; a ${JSON.stringify(methodType)} job trains on ${KIND_NAMES[kind]}`,
        param,
      );
    }
    return file;
  }

  /** A file stored before kinds were recorded: validate it again and keep what it holds. */
  private async recordKind(tenantId: string, file: FileEntity, param: string): Promise<FileKind> {
    const content = await this.files.getContent(tenantId, file.id);
    const { kind } = validateJsonl(content ?? Buffer.alloc(0));
    // Processed files were valid, so they hold one kind; anything else is no longer usable.
    if (kind !== 'sft' && kind !== 'preference') {
      throw new ApiError('invalid_file', `File ${file.id} holds no training data`, param);
    }
    await this.files.recordKind(file.id, kind);
    return kind;
  }

  private parseLimit(text: string | undefined): number {
    if (text === undefined) return 20;
    // Digits only: Number() would also take "1e2", "0x10" and " 10".
    const limit = /^\d{1,3}$/.test(text) ? Number(text) : NaN;
    if (!Number.isInteger(limit) || limit < 1 || limit > 100) {
      throw new ApiError('invalid_request', 'limit must be an integer from 1 to 100', 'limit');
    }
    return limit;
  }
}
