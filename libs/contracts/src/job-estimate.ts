import { z } from 'zod';

import { FineTuneSpecSchema } from './fine-tune-spec';
import { ResolvedHyperparametersSchema } from './hyperparameters';
import { LoraConfigSchema } from './lora';

/**
 * What one backend of the live fleet would make of the job (issue 20 item 3): its measured
 * speed on the job's base model, the wall time that gives, and whether the run fits its
 * workers' memory. `null` figures come with a `reason`.
 */
export const BackendEstimateSchema = z.object({
  backend: z.string(),
  /** Live training workers on this backend. */
  workers: z.number().int(),
  /** The largest trainer memory budget among them (LORAFLEET_MEMORY_LIMIT_MB), MiB. */
  memory_limit_mb: z.number().int().nullable(),
  /** Whether the estimated peak fits that budget (and the wasm heap on wasm); null: unknown. */
  fits_memory: z.boolean().nullable(),
  /** Median real tokens/s of the newest finished attempts on this base model and backend. */
  tokens_per_second: z.number().nullable(),
  /** Finished attempts the median is over. */
  samples: z.number().int(),
  /** trained_tokens ÷ tokens_per_second, training steps only (no model load, eval or export). */
  estimated_seconds: z.number().int().nullable(),
  /** Why a figure above is null or the run does not fit; null when there is nothing to say. */
  reason: z.string().nullable(),
});
export type BackendEstimate = z.infer<typeof BackendEstimateSchema>;

/** The tenant's quota, as create will apply it now. */
export const QuotaEstimateSchema = z.object({
  /** Whether a create now would pass every quota. */
  fits: z.boolean(),
  /** The rule that limits (the first that would refuse, else the only one there is). */
  rule: z.literal('max_active_jobs_per_tenant'),
  limit: z.number().int(),
  active_jobs: z.number().int(),
  /** What create would answer (429) when it does not fit; null when it fits. */
  message: z.string().nullable(),
});

/**
 * `POST /v1/fine_tuning/jobs/estimate` (lorafleet extension): what the same body would train,
 * before anything is created. Token and step figures are the trainer's own (libs/data
 * tokenization, loss mask and step count); memory is the trainer's pre-flight estimator.
 */
export const FineTuningJobEstimateSchema = z.object({
  object: z.literal('fine_tuning.job.estimate'),
  model: z.string(),
  training_file: z.string(),
  method: z.enum(['supervised', 'dpo']),
  hyperparameters: ResolvedHyperparametersSchema,
  lora: LoraConfigSchema,
  training: FineTuneSpecSchema.shape.training,
  examples: z.number().int(),
  /** Tokens one epoch reads after truncation, padding excluded (the job's `trained_tokens` per epoch). */
  trained_tokens_per_epoch: z.number().int(),
  /** Tokens the whole run reads: what the finished job reports as `trained_tokens`. */
  trained_tokens: z.number().int(),
  /** False when `max_steps` stops the run inside an epoch: that epoch's share is prorated. */
  trained_tokens_exact: z.boolean(),
  /** Loss targets (completion and assistant tokens) per epoch and over the run. */
  target_tokens_per_epoch: z.number().int(),
  target_tokens: z.number().int(),
  steps_per_epoch: z.number().int(),
  total_steps: z.number().int(),
  /** Epochs the run covers: `n_epochs`, or fewer when `max_steps` stops it first. */
  epochs: z.number(),
  truncated_examples: z.number().int(),
  examples_without_targets: z.number().int(),
  /** The trainer's pre-flight memory estimate (MiB, rounded up) and its parts. */
  estimated_peak_memory_mb: z.number().int(),
  memory_parts_mb: z.object({
    frozen_weights: z.number().int(),
    adapter_and_optimizer: z.number().int(),
    activations: z.number().int(),
    head: z.number().int(),
    runtime: z.number().int(),
  }),
  /** One entry per backend live training workers have, alphabetically; empty with no live worker. */
  backends: z.array(BackendEstimateSchema),
  quota: QuotaEstimateSchema,
});
export type FineTuningJobEstimate = z.infer<typeof FineTuningJobEstimateSchema>;
