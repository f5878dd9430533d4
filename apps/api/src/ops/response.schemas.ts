import {
  FileObjectSchema,
  FineTuningJobSchema,
  JobStatusSchema,
  type AdapterObject,
} from '@lorafleet/contracts';
import { z } from 'zod';
import type { WorkersController } from '../fleet/workers.controller';
import type { JobsService } from '../jobs/jobs.service';
import type { ModelObject } from '../models/models.service';

/*
 * Response shapes that libs/contracts does not (yet) describe with zod: the API builds them
 * from TypeScript interfaces. They are written here once, for the OpenAPI document, and the
 * `Same<…>` checks at the bottom make `tsc` fail if an interface and its schema drift apart.
 * When contracts grows these schemas, import them from there and delete the copies.
 */

export const ModelObjectSchema = z.object({
  id: z.string(),
  object: z.literal('model'),
  created: z.number().int(),
  owned_by: z.string(),
  parent: z
    .string()
    .optional()
    .describe(
      'Fine-tuned models only: the base model the adapter applies to, as vLLM lists adapters.',
    ),
  // lorafleet extensions, on base models only (OpenAI's model object has none of these); null
  // when the model's config.json cannot be read or names an architecture lorafleet cannot train.
  architecture: z
    .string()
    .nullable()
    .optional()
    .describe('Base models: config.json `model_type`, e.g. `llama`, `qwen2`.'),
  parameters: z
    .number()
    .int()
    .nullable()
    .optional()
    .describe('Base models: parameter count from config.json, as PEFT counts it.'),
  context_length: z
    .number()
    .int()
    .nullable()
    .optional()
    .describe(
      'Base models: the longest sequence a job may train on (positions, capped by a sliding window).',
    ),
});

export const ModelListSchema = z.object({
  object: z.literal('list'),
  data: z.array(ModelObjectSchema),
});

export const DeletedSchema = <T extends string>(object: T) =>
  z.object({ id: z.string(), object: z.literal(object), deleted: z.literal(true) });

export const FileListSchema = z.object({
  object: z.literal('list'),
  data: z.array(FileObjectSchema),
  has_more: z.boolean(),
});

export const FineTuningJobListSchema = z.object({
  object: z.literal('list'),
  data: z.array(FineTuningJobSchema),
  has_more: z.boolean(),
});

export const CheckpointSchema = z.object({
  id: z.string(),
  object: z.literal('fine_tuning.job.checkpoint'),
  created_at: z.number().int(),
  fine_tuned_model_checkpoint: z.string(),
  fine_tuning_job_id: z.string(),
  step_number: z.number().int(),
  metrics: z.record(z.string(), z.number()),
  bytes: z.number().int(),
});

export const CheckpointListSchema = z.object({
  object: z.literal('list'),
  data: z.array(CheckpointSchema),
  has_more: z.boolean(),
});

export const AdapterObjectSchema = z.object({
  id: z.string(),
  object: z.literal('adapter'),
  created_at: z.number().int(),
  fine_tuned_model: z.string(),
  base_model: z.string(),
  fine_tuning_job_id: z.string(),
  adapter_config: z.record(z.string(), z.unknown()),
  weights_sha256: z.string(),
  files: z.array(z.string()),
});

export const WorkerStatusSchema = z.enum(['idle', 'busy', 'stopping', 'gone']);

export const WorkerObjectSchema = z.object({
  id: z.string(),
  object: z.literal('worker'),
  host: z.string(),
  pid: z.number().int(),
  backend: z.string(),
  device: z.string().nullable(),
  status: WorkerStatusSchema,
  current_job: z.string().nullable(),
  /** LORAFLEET_MEMORY_LIMIT_MB as the worker resolved it (default: cgroup limit, else 90% of RAM). */
  memory_limit_mb: z.number().int().nullable(),
  versions: z.record(z.string(), z.string()).nullable(),
  started_at: z.number().int(),
  last_heartbeat_at: z.number().int(),
  heartbeat_age_seconds: z.number(),
});

export const WorkerListSchema = z.object({
  object: z.literal('list'),
  data: z.array(WorkerObjectSchema),
  /** BullMQ job counts by state; null while Redis is unreachable. */
  queue: z.record(z.string(), z.number().int()).nullable(),
});

const CompletionUsageSchema = z.object({
  prompt_tokens: z.number().int(),
  completion_tokens: z.number().int(),
  total_tokens: z.number().int(),
});
const FinishReasonSchema = z.enum(['stop', 'length']);

/** `POST /v1/chat/completions` without `stream` (issue 19); streamed, each event is a chunk. */
export const ChatCompletionSchema = z.object({
  id: z.string().describe('`chatcmpl-…`'),
  object: z.literal('chat.completion'),
  created: z.number().int(),
  model: z.string().describe('As requested: a base model or an `ft:` model'),
  choices: z.array(
    z.object({
      index: z.literal(0),
      message: z.object({
        role: z.literal('assistant'),
        content: z.string(),
        refusal: z.null(),
      }),
      logprobs: z.null(),
      finish_reason: FinishReasonSchema,
    }),
  ),
  usage: CompletionUsageSchema,
});

/** `POST /v1/completions` without `stream` (issue 19). */
export const TextCompletionSchema = z.object({
  id: z.string().describe('`cmpl-…`'),
  object: z.literal('text_completion'),
  created: z.number().int(),
  model: z.string(),
  choices: z.array(
    z.object({
      index: z.literal(0),
      text: z.string(),
      logprobs: z.null(),
      finish_reason: FinishReasonSchema,
    }),
  ),
  usage: CompletionUsageSchema,
});

export const HealthSchema = z.object({ status: z.literal('ok') });

export const ReadinessSchema = z.object({
  status: z.enum(['ready', 'unavailable']),
  checks: z.record(z.string(), z.string()),
  warnings: z.array(z.string()),
});

/** Statuses accepted by the `status` filter of the job list. */
export const JobStatusFilterSchema = JobStatusSchema;

// Compile-time drift checks: what the API returns must fit the documented schema, field for
// field, and the schema must name no field the API leaves out.
type Fits<Actual, Documented> = [Actual] extends [Documented]
  ? [keyof Actual] extends [keyof Documented]
    ? [keyof Documented] extends [keyof Actual]
      ? true
      : false
    : false
  : false;
type Assert<T extends true> = T;
type Checkpoint = Awaited<ReturnType<JobsService['checkpoints']>>['data'][number];
type Worker = Awaited<ReturnType<WorkersController['list']>>['data'][number];
export type ResponseSchemaDriftChecks = [
  Assert<Fits<ModelObject, z.infer<typeof ModelObjectSchema>>>,
  Assert<Fits<AdapterObject, z.infer<typeof AdapterObjectSchema>>>,
  Assert<Fits<Checkpoint, z.infer<typeof CheckpointSchema>>>,
  // The controller's `object: 'worker'` literal widens to string; compare the other fields.
  Assert<Fits<Omit<Worker, 'object'>, Omit<z.infer<typeof WorkerObjectSchema>, 'object'>>>,
];
