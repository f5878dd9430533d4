import { z } from 'zod';

const auto = z.literal('auto');

/** OpenAI's `hyperparameters` object; each value may be "auto". */
export const HyperparametersSchema = z
  .object({
    n_epochs: z.union([auto, z.number().int().min(1).max(50)]).default('auto'),
    batch_size: z.union([auto, z.number().int().min(1).max(256)]).default('auto'),
    learning_rate_multiplier: z.union([auto, z.number().positive().max(100)]).default('auto'),
  })
  .strict();
export type HyperparametersInput = z.input<typeof HyperparametersSchema>;
export type Hyperparameters = z.output<typeof HyperparametersSchema>;

/** Resolved hyperparameters as stored on the job once "auto" has been decided. */
export const ResolvedHyperparametersSchema = z
  .object({
    n_epochs: z.number().int().min(1),
    batch_size: z.number().int().min(1),
    learning_rate_multiplier: z.number().positive(),
  })
  .strict();
export type ResolvedHyperparameters = z.infer<typeof ResolvedHyperparametersSchema>;

/**
 * Learning-rate schedules (transformers' shapes, lora-core `lr-schedule.ts`). `constant` keeps
 * the peak rate after warmup.
 */
export const LR_SCHEDULERS = ['linear', 'cosine', 'constant'] as const;
export type LrSchedulerType = (typeof LR_SCHEDULERS)[number];

/**
 * The `training` extension object (absolute settings OpenAI does not expose). Its defaults
 * are Hugging Face `TrainingArguments`' (transformers v4.46), the trainer lora-core mirrors.
 */
export const TrainingOptionsSchema = z
  .object({
    /** Default: `learning_rate_multiplier` × DEFAULT_BASE_LEARNING_RATE (resolved by the spec). */
    learning_rate: z.number().positive().max(1).optional(),
    /** Longest tokenized example kept (the tail is cut); resolved in the spec, see below. */
    max_seq_length: z.number().int().min(8).max(8192),
    lr_scheduler: z.enum(LR_SCHEDULERS).default('linear'),
    warmup_steps: z.number().int().min(0).max(100_000).default(0),
    /** AdamW decoupled weight decay λ. */
    weight_decay: z.number().min(0).max(1).default(0),
    gradient_accumulation_steps: z.number().int().min(1).max(1024).default(1),
    /** Global-norm gradient clipping threshold; 0 disables. */
    max_grad_norm: z.number().min(0).max(1e6).default(1),
    eval_every_steps: z.number().int().min(1).max(100_000).optional(),
    /** Hard cap on optimizer steps; useful for smoke runs. */
    max_steps: z.number().int().min(1).max(1_000_000).optional(),
    /**
     * Recompute each block's activations in backward instead of keeping them: less memory
     * (the pre-flight estimate counts it) for about one more forward pass of time.
     */
    gradient_checkpointing: z.boolean().default(false),
  })
  .strict();
/**
 * `training` as a create request sends it: `max_seq_length` may be omitted, and the spec
 * resolver then takes it from the base model (libs/data `defaultMaxSeqLength`).
 */
export const TrainingOptionsRequestSchema = TrainingOptionsSchema.extend({
  max_seq_length: z
    .number()
    .int()
    .min(8)
    .max(8192)
    .optional()
    .describe(
      "Default: min(1024, the base model's context length); a larger value than the context length is a 400",
    ),
});
/** `training` as a client sends it. */
export type TrainingOptionsInput = z.input<typeof TrainingOptionsRequestSchema>;

/** Default base learning rate when a model's registry entry names none (DESIGN §4). */
export const DEFAULT_BASE_LEARNING_RATE = 2e-4;

/**
 * A base model's registry entry, the optional `lorafleet-model.json` beside its config.json:
 * lorafleet's own facts about a model that Hugging Face's files don't carry. Today that is its
 * default learning rate, what `learning_rate_multiplier: 1` means for it (a larger model
 * usually wants a smaller one); the range is the one a job's `training.learning_rate` has.
 */
export const ModelRegistryEntrySchema = z
  .object({ default_learning_rate: z.number().positive().max(1).optional() })
  .strict();
export type ModelRegistryEntry = z.infer<typeof ModelRegistryEntrySchema>;

/**
 * Resolves "auto" hyperparameters with OpenAI's published heuristic (openai-cookbook,
 * "Data preparation and analysis for chat model fine-tuning"): aim for ~3 epochs, but at
 * least 100 and at most 25,000 example passes in total.
 */
export function resolveHyperparameters(
  requested: Hyperparameters,
  trainingExamples: number,
): ResolvedHyperparameters {
  const TARGET_EPOCHS = 3;
  const MIN_TARGET_EXAMPLES = 100;
  const MAX_TARGET_EXAMPLES = 25_000;
  const MIN_DEFAULT_EPOCHS = 1;
  const MAX_DEFAULT_EPOCHS = 25;
  const n = Math.max(1, trainingExamples);
  let epochs = TARGET_EPOCHS;
  if (n * TARGET_EPOCHS < MIN_TARGET_EXAMPLES) {
    epochs = Math.min(MAX_DEFAULT_EPOCHS, Math.floor(MIN_TARGET_EXAMPLES / n));
  } else if (n * TARGET_EPOCHS > MAX_TARGET_EXAMPLES) {
    epochs = Math.max(MIN_DEFAULT_EPOCHS, Math.floor(MAX_TARGET_EXAMPLES / n));
  }
  // OpenAI sizes batches at roughly 0.2% of the data set, capped at 256.
  const autoBatch = Math.min(256, Math.max(1, Math.round(n * 0.002)));
  return {
    n_epochs: requested.n_epochs === 'auto' ? epochs : requested.n_epochs,
    batch_size: requested.batch_size === 'auto' ? autoBatch : requested.batch_size,
    learning_rate_multiplier:
      requested.learning_rate_multiplier === 'auto' ? 1 : requested.learning_rate_multiplier,
  };
}
