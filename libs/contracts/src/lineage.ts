import { z } from 'zod';
import { FineTuneSpecSchema } from './fine-tune-spec';

/** lorafleet's release, recorded in every adapter's lineage. */
export const LORAFLEET_VERSION = '0.1.0';

const Sha256Schema = z.string().regex(/^[0-9a-f]{64}$/, 'a sha256 is 64 lowercase hex digits');

/**
 * Where an adapter came from (DESIGN §6): stored on the job and the adapter, and written as
 * `lorafleet.json` beside the PEFT files by the worker (through the API's archive) and by
 * `lorafleet train`. Every writer builds it and every reader parses it with this schema.
 */
export const LineageSchema = z
  .object({
    lorafleet_version: z.string(),
    /** The base model's name (its directory's). */
    base_model: z.string(),
    /**
     * Content hash of the base model (libs/data `hashBaseModel`: config, weights, tokenizer),
     * as the job recorded it at creation; null where none was recorded.
     */
    base_model_hash: z.string().nullable(),
    /** sha256 of the weight bytes as lora-core loaded them; adapters apply only to a match. */
    base_model_sha256: Sha256Schema.nullable(),
    training_file_sha256: Sha256Schema,
    validation_file_sha256: Sha256Schema.nullable(),
    /** The trainer's run-configuration hash (a checkpoint resumes only under the same one). */
    config_sha256: Sha256Schema,
    /** Exactly what was trained with. */
    spec: FineTuneSpecSchema,
    /** The tfjs backend that trained (the last attempt's). */
    backend: z.string(),
    tfjs_version: z.string(),
    /** The step the final attempt resumed from; null for a run from step 0. */
    resumed_from_step: z.number().int().min(0).nullable(),
    /** The fine-tuning job, when the API's worker trained it; null from `lorafleet train`. */
    fine_tuning_job_id: z.string().nullable(),
    /** The worker whose attempt produced the adapter (jobs only). */
    worker: z.string().optional(),
    /** Set in the API's archive only: the adapter record it was downloaded from. */
    adapter_id: z.string().optional(),
    fine_tuned_model: z.string().optional(),
    weights_sha256: Sha256Schema.optional(),
  })
  .strict();
export type Lineage = z.infer<typeof LineageSchema>;
