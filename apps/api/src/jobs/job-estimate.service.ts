import { Inject, Injectable } from '@nestjs/common';
import {
  WORKER_GONE_AFTER_MS,
  type ApiEnv,
  type BackendEstimate,
  type FineTuningJobEstimate,
  type MethodType,
} from '@lorafleet/contracts';
import {
  WASM_HEAP_BUDGET_BYTES,
  estimateFineTuneRun,
  loadTokenizer,
  parseJsonlExamples,
  parsePreferenceJsonl,
  wasmHeapBytes,
  type BaseModelEntry,
  type FineTuneRunEstimate,
  type TextTokenizer,
} from '@lorafleet/data';
import {
  FilesRepository,
  JobsRepository,
  WorkersRepository,
  type BackendThroughput,
  type FleetBackend,
} from '@lorafleet/db';
import { API_ENV } from '../config/api-env.token';
import { ApiError } from '../errors/api-error';
import { JobsService, type ResolvedJobRequest } from './jobs.service';

const MIB = 1024 * 1024;
const toMb = (bytes: number) => Math.ceil(bytes / MIB);

/**
 * `POST /v1/fine_tuning/jobs/estimate` (issue 20 item 3): runs create's own checks and
 * resolution (`JobsService.validate`, so the same body gets the same 4xx), then sizes the run
 * the way the trainer will (libs/data `estimateFineTuneRun`: its tokenizer, truncation, loss
 * mask, step count and pre-flight memory estimator; for DPO, over preference pairs), prices it
 * on each backend of the live fleet with the speeds workers recorded for the job's training
 * method, and checks the tenant's quota. It stores nothing.
 */
@Injectable()
export class JobEstimateService {
  /** Tokenizers by base content hash: a changed model directory loads afresh. */
  private readonly tokenizers = new Map<string, Promise<TextTokenizer>>();

  constructor(
    private readonly jobsService: JobsService,
    private readonly jobs: JobsRepository,
    private readonly files: FilesRepository,
    private readonly workers: WorkersRepository,
    @Inject(API_ENV) private readonly env: ApiEnv,
  ) {}

  async estimate(tenantId: string, body: unknown): Promise<FineTuningJobEstimate> {
    const resolved = await this.jobsService.validate(tenantId, body);
    const { request, spec } = resolved;
    const run = await this.sizeRun(tenantId, resolved);
    const [throughput, fleet, activeJobs] = await Promise.all([
      // Per method: a DPO token costs a reference forward pass more than a supervised one, and
      // no fixed factor converts one speed into the other on every backend.
      this.workers.throughputFor(request.model, spec.method.type),
      this.workers.liveBackends(WORKER_GONE_AFTER_MS),
      this.jobs.countActiveForTenant(tenantId),
    ]);
    const limit = this.env.LORAFLEET_MAX_ACTIVE_JOBS_PER_TENANT;
    const quotaFits = activeJobs < limit;
    const { parts } = run.memory;
    return {
      object: 'fine_tuning.job.estimate',
      model: request.model,
      training_file: request.training_file,
      method: spec.method.type,
      hyperparameters: spec.hyperparameters,
      lora: spec.lora,
      training: spec.training,
      examples: run.examples,
      trained_tokens_per_epoch: run.tokensPerEpoch,
      trained_tokens: run.trainedTokens,
      trained_tokens_exact: run.exact,
      target_tokens_per_epoch: run.targetTokensPerEpoch,
      target_tokens: run.targetTokens,
      steps_per_epoch: run.stepsPerEpoch,
      total_steps: run.totalSteps,
      epochs: run.epochs,
      truncated_examples: run.truncatedExamples,
      examples_without_targets: run.examplesWithoutTargets,
      estimated_peak_memory_mb: toMb(run.memory.totalBytes),
      memory_parts_mb: {
        frozen_weights: toMb(parts.frozenWeights),
        adapter_and_optimizer: toMb(parts.adapterAndOptimizer),
        activations: toMb(parts.activations),
        head: toMb(parts.head),
        runtime: toMb(parts.runtime),
      },
      backends: fleet.map((backend) =>
        backendEstimate(
          backend,
          throughput.find((t) => t.backend === backend.backend) ?? null,
          run,
          request.model,
          spec.method.type,
        ),
      ),
      quota: {
        fits: quotaFits,
        rule: 'max_active_jobs_per_tenant',
        limit,
        active_jobs: activeJobs,
        // The words create's 429 uses (JobsService.create).
        message: quotaFits
          ? null
          : `This organization already has ${limit} active fine-tuning jobs; wait for one to finish or cancel one`,
      },
    };
  }

  /** The trainer's figures for this body's training file, on its base model's tokenizer. */
  private async sizeRun(
    tenantId: string,
    { request, spec, facts, baseModel, baseModelHash }: ResolvedJobRequest,
  ): Promise<FineTuneRunEstimate> {
    const content = await this.files.getContent(tenantId, request.training_file);
    if (content === null) {
      // Deleted between the check and the read.
      throw new ApiError(
        'invalid_request',
        `No such file: ${request.training_file}`,
        'training_file',
      );
    }
    const tokenizer = await this.tokenizer(baseModel, baseModelHash);
    try {
      // The file's kind matches the method (validate checked it): pairs for DPO, as the
      // trainer reads them.
      const data =
        spec.method.type === 'dpo' ? parsePreferenceJsonl(content) : parseJsonlExamples(content);
      return estimateFineTuneRun(data, tokenizer, spec, facts.trainingShape);
    } catch (error) {
      // A processed file parses; what fails here is an example the model's chat template or
      // tokenizer cannot take, which the worker would refuse as bad input (R13) too.
      throw new ApiError(
        'invalid_file',
        `File ${request.training_file} cannot be tokenized for ${request.model}: ${error instanceof Error ? error.message : String(error)}`,
        'training_file',
      );
    }
  }

  private tokenizer(base: BaseModelEntry, hash: string): Promise<TextTokenizer> {
    let tokenizer = this.tokenizers.get(hash);
    if (!tokenizer) {
      tokenizer = loadTokenizer(base.dir);
      // A failed load is not kept: the next request tries again.
      tokenizer.catch(() => this.tokenizers.delete(hash));
      this.tokenizers.set(hash, tokenizer);
    }
    return tokenizer;
  }
}

/** Whether the run fits a backend's workers, and why not. */
function memoryFit(
  backend: FleetBackend,
  run: FineTuneRunEstimate,
): { fits: boolean | null; reason: string | null } {
  const peakMb = toMb(run.memory.totalBytes);
  if (backend.backend === 'wasm' || backend.backend === 'wasm-blas') {
    // The trainer's own wasm check: the heap holds all but host-kept weights (wasm-blas).
    const heap = wasmHeapBytes(run.memory, backend.backend === 'wasm-blas');
    if (heap > WASM_HEAP_BUDGET_BYTES) {
      return {
        fits: false,
        reason: `needs about ${toMb(heap)} MiB of wasm heap, more than the ${toMb(WASM_HEAP_BUDGET_BYTES)} MiB the wasm backend can use`,
      };
    }
  }
  if (backend.maxMemoryLimitMb === null) return { fits: null, reason: null };
  if (peakMb > backend.maxMemoryLimitMb) {
    return {
      fits: false,
      reason: `needs about ${peakMb} MiB, more than the ${backend.maxMemoryLimitMb} MiB memory limit of its largest worker`,
    };
  }
  return { fits: true, reason: null };
}

function backendEstimate(
  backend: FleetBackend,
  measured: BackendThroughput | null,
  run: FineTuneRunEstimate,
  model: string,
  method: MethodType,
): BackendEstimate {
  const memory = memoryFit(backend, run);
  const reasons = [memory.reason];
  if (measured === null) {
    reasons.push(
      method === 'dpo'
        ? `no DPO job on ${model} has finished on ${backend.backend} yet, so its DPO speed is unknown (supervised speeds do not carry over: each DPO step adds a reference forward pass and reads both sides of every pair)`
        : `no ${model} job has finished on ${backend.backend} yet, so its speed is unknown`,
    );
  }
  return {
    backend: backend.backend,
    workers: backend.workers,
    memory_limit_mb: backend.maxMemoryLimitMb,
    fits_memory: memory.fits,
    tokens_per_second: measured?.tokensPerSecond ?? null,
    samples: measured?.samples ?? 0,
    estimated_seconds:
      measured === null ? null : Math.ceil(run.trainedTokens / measured.tokensPerSecond),
    reason: reasons.filter((r) => r !== null).join('; ') || null,
  };
}
