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
export const ResolvedHyperparametersSchema = z.object({
  n_epochs: z.number().int(),
  batch_size: z.number().int(),
  learning_rate_multiplier: z.number(),
});
export type ResolvedHyperparameters = z.infer<typeof ResolvedHyperparametersSchema>;

/** The `training` extension object (absolute settings OpenAI does not expose). */
export const TrainingOptionsSchema = z
  .object({
    learning_rate: z.number().positive().max(1).optional(),
    max_seq_length: z.number().int().min(8).max(8192).default(256),
    lr_scheduler: z.enum(['linear', 'cosine']).default('linear'),
    warmup_steps: z.number().int().min(0).max(100_000).default(0),
    weight_decay: z.number().min(0).max(1).default(0),
    gradient_accumulation_steps: z.number().int().min(1).max(1024).default(1),
    eval_every_steps: z.number().int().min(1).max(100_000).optional(),
    /** Hard cap on optimizer steps; useful for smoke runs. */
    max_steps: z.number().int().min(1).max(1_000_000).optional(),
  })
  .strict();
export type TrainingOptionsInput = z.input<typeof TrainingOptionsSchema>;
export type TrainingOptions = z.output<typeof TrainingOptionsSchema>;

/** Default base learning rate when a model's registry entry names none (DESIGN §4). */
export const DEFAULT_BASE_LEARNING_RATE = 2e-4;
