import { z } from 'zod';
import {
  HyperparametersSchema,
  ResolvedHyperparametersSchema,
  TrainingOptionsRequestSchema,
  TrainingOptionsSchema,
} from './hyperparameters';
import { LoraConfigSchema } from './lora';

/** OpenAI's seed range (a non-negative 32-bit integer). */
export const SeedSchema = z.number().int().min(0).max(2_147_483_647);

/**
 * Everything that decides what a fine-tune trains, with "auto" and every default resolved:
 * the one value the API stores on the job (one jsonb column), the worker hands its trainer
 * child unchanged, `runFineTune` trains from, and `lorafleet train` builds from its flags.
 * libs/data `resolveFineTuneSpec` is the only code that makes one from a request. The
 * sections keep the REST request's names (`hyperparameters`, `lora`, `training`), so a field
 * is called the same from the request body to the optimizer.
 */
export const FineTuneSpecSchema = z
  .object({
    /** Seeds LoRA init, per-epoch shuffling, adapter dropout and sample generation. */
    seed: SeedSchema,
    /** OpenAI's `hyperparameters` with "auto" decided (echoed on the job object). */
    hyperparameters: ResolvedHyperparametersSchema,
    lora: LoraConfigSchema,
    /**
     * `learning_rate` and `max_seq_length` are always resolved here. A request caps the rate
     * at 1; the trainer takes any finite positive one (its NaN guard is tested beyond it).
     */
    training: TrainingOptionsSchema.extend({
      learning_rate: z.number().positive().finite(),
      max_seq_length: z.number().int().min(8).max(8192),
    }),
  })
  .strict();
export type FineTuneSpec = z.output<typeof FineTuneSpecSchema>;

/**
 * What a caller asks for before resolution: the REST request's parts, or `lorafleet train`'s
 * flags in the same shape. Omitted values take the schemas' defaults; a seed left out is
 * drawn at random, as OpenAI does (the job and the lineage record the one drawn).
 */
export const FineTuneSpecRequestSchema = z
  .object({
    seed: SeedSchema.nullish(),
    hyperparameters: HyperparametersSchema.optional(),
    lora: LoraConfigSchema.optional(),
    training: TrainingOptionsRequestSchema.optional(),
  })
  .strict();
export type FineTuneSpecRequest = z.input<typeof FineTuneSpecRequestSchema>;
