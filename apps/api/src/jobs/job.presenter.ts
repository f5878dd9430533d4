import type { FineTuningJob, FineTuningJobEvent } from '@lorafleet/contracts';
import type { FineTuningJobEntity, JobEventEntity } from '@lorafleet/db';

const seconds = (date: Date | null): number | null =>
  date ? Math.floor(date.getTime() / 1000) : null;

/** Entity → the OpenAI job object plus lorafleet's extensions (DESIGN §4). */
export function presentJob(job: FineTuningJobEntity): FineTuningJob {
  const total = job.progressTotalSteps;
  return {
    id: job.id,
    object: 'fine_tuning.job',
    model: job.model,
    status: job.status,
    created_at: Math.floor(job.createdAt.getTime() / 1000),
    finished_at: seconds(job.finishedAt),
    fine_tuned_model: job.fineTunedModel,
    suffix: job.suffix,
    organization_id: job.tenantId,
    training_file: job.trainingFileId,
    validation_file: job.validationFileId,
    hyperparameters: job.spec.hyperparameters,
    trained_tokens: job.trainedTokens,
    error: job.error,
    seed: job.spec.seed,
    metadata: job.metadata,
    estimated_finish: seconds(job.estimatedFinish),
    result_files: job.resultFiles,
    progress: {
      step: job.progressStep,
      total_steps: total,
      epoch: job.progressEpoch,
      percent: total ? Math.min(100, Math.round((1000 * job.progressStep) / total) / 10) : null,
    },
    lora: job.spec.lora,
    training: job.spec.training,
    worker: job.workerId,
    // The trainer's backend once it reported, until then what the worker asked for.
    backend: job.backend ?? job.requestedBackend,
    adapter_id: job.adapterId,
    base_model_hash: job.baseModelHash,
    usage:
      job.peakMemoryMb === null && job.tokensPerSecond === null
        ? null
        : { peak_memory_mb: job.peakMemoryMb, tokens_per_second: job.tokensPerSecond },
  };
}

/**
 * The event's id is its ordinal within its job (`seq`), not the global row id: a global
 * counter would show every tenant the whole system's activity.
 */
export function presentEvent(event: JobEventEntity & { seq: number }): FineTuningJobEvent {
  return {
    id: `ftevent-${event.seq}`,
    object: 'fine_tuning.job.event',
    created_at: Math.floor(event.createdAt.getTime() / 1000),
    level: event.level,
    message: event.message,
    type: event.type,
    data: event.data,
  };
}
