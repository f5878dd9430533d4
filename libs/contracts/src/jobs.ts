import { z } from 'zod';
import { FineTuneSpecSchema } from './fine-tune-spec';
import {
  HyperparametersSchema,
  ResolvedHyperparametersSchema,
  TrainingOptionsRequestSchema,
} from './hyperparameters';
import { JobStatusSchema } from './job-status';
import { LoraConfigSchema } from './lora';

const MetadataSchema = z
  .record(z.string().max(64), z.string().max(512))
  .refine((m) => Object.keys(m).length <= 16, 'metadata holds at most 16 keys');

/** Body of `POST /v1/fine_tuning/jobs` (OpenAI shape plus `lora` and `training`). */
export const CreateFineTuningJobRequestSchema = z
  .object({
    model: z.string().min(1).max(256),
    training_file: z.string().min(1).max(128),
    validation_file: z.string().min(1).max(128).nullish(),
    suffix: z
      .string()
      .max(64)
      .regex(/^[A-Za-z0-9_-]+$/, 'suffix may hold letters, digits, - and _')
      .nullish(),
    seed: z.number().int().min(0).max(2_147_483_647).nullish(),
    metadata: MetadataSchema.nullish(),
    hyperparameters: HyperparametersSchema.optional(),
    method: z
      .object({
        type: z.literal('supervised'),
        supervised: z.object({ hyperparameters: HyperparametersSchema.optional() }).optional(),
      })
      .optional(),
    lora: LoraConfigSchema.optional(),
    training: TrainingOptionsRequestSchema.optional(),
  })
  .strict();
export type CreateFineTuningJobRequest = z.infer<typeof CreateFineTuningJobRequestSchema>;

export const JobErrorSchema = z.object({
  code: z.string(),
  message: z.string(),
  param: z.string().nullable(),
});

export const JobProgressSchema = z.object({
  step: z.number().int(),
  total_steps: z.number().int().nullable(),
  epoch: z.number().nullable(),
  percent: z.number().nullable(),
});

export const JobUsageSchema = z.object({
  /** Peak resident memory of the trainer process (VmHWM), MiB; null where it is not measurable. */
  peak_memory_mb: z.number().int().nullable(),
  /** Real (non-padding) tokens per second, averaged over the attempt's training steps. */
  tokens_per_second: z.number().nullable(),
});
export type JobUsage = z.infer<typeof JobUsageSchema>;

/** The job object returned by every job endpoint. */
export const FineTuningJobSchema = z.object({
  id: z.string(),
  object: z.literal('fine_tuning.job'),
  model: z.string(),
  status: JobStatusSchema,
  created_at: z.number().int(),
  finished_at: z.number().int().nullable(),
  fine_tuned_model: z.string().nullable(),
  /** The suffix given at creation (lorafleet extension; OpenAI folds it into the model name). */
  suffix: z.string().nullable(),
  organization_id: z.string(),
  training_file: z.string(),
  validation_file: z.string().nullable(),
  hyperparameters: ResolvedHyperparametersSchema.or(HyperparametersSchema),
  trained_tokens: z.number().int().nullable(),
  error: JobErrorSchema.nullable(),
  seed: z.number().int(),
  metadata: z.record(z.string(), z.string()).nullable(),
  estimated_finish: z.number().int().nullable(),
  result_files: z.array(z.string()),
  progress: JobProgressSchema,
  lora: LoraConfigSchema,
  /** The job's resolved `training` (its spec's): `learning_rate` and `max_seq_length` included. */
  training: FineTuneSpecSchema.shape.training,
  worker: z.string().nullable(),
  backend: z.string().nullable(),
  adapter_id: z.string().nullable(),
  /**
   * Content hash of the base model recorded at creation (sha256 over its config, weights and
   * tokenizer files); the worker refuses to train on a base whose hash differs.
   */
  base_model_hash: z.string().nullable(),
  /**
   * What the successful attempt used (read-only; `training` holds the request's options):
   * the trainer process's peak resident memory and its mean training throughput. Null until
   * the job succeeds.
   */
  usage: JobUsageSchema.nullable(),
});
export type FineTuningJob = z.infer<typeof FineTuningJobSchema>;

export const JobEventLevelSchema = z.enum(['info', 'warn', 'error']);
export const JobEventTypeSchema = z.enum(['message', 'metrics', 'status']);

export const FineTuningJobEventSchema = z.object({
  id: z.string(),
  object: z.literal('fine_tuning.job.event'),
  created_at: z.number().int(),
  level: JobEventLevelSchema,
  message: z.string(),
  type: JobEventTypeSchema,
  data: z.record(z.string(), z.unknown()).nullable(),
});
export type FineTuningJobEvent = z.infer<typeof FineTuningJobEventSchema>;

export function listPage<T extends z.ZodTypeAny>(item: T) {
  return z.object({ object: z.literal('list'), data: z.array(item), has_more: z.boolean() });
}
