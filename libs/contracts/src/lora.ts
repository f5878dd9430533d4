import { z } from 'zod';

/**
 * The `lora` extension object on job creation. Field names follow PEFT's `LoraConfig`
 * (https://github.com/huggingface/peft/blob/v0.17.0/src/peft/tuners/lora/config.py),
 * snake_case as in the REST body. The defaults are PEFT's, except `alpha`.
 */
export const LoraConfigSchema = z
  .object({
    r: z.number().int().min(1).max(256).default(8),
    /**
     * PEFT's default is 8 (scale α/r = 1 at r = 8). lorafleet has always defaulted to 16
     * (scale 2, the LoRA-paper habit of α = 2r), and jobs echo it; changing it would change
     * every default job's adapter, so it stays 16.
     */
    alpha: z.number().positive().max(4096).default(16),
    dropout: z.number().min(0).max(0.9).default(0),
    /** Module names (exact or dotted suffix) or `all-linear`; omitted = PEFT's per-architecture default. */
    target_modules: z
      .union([
        z.literal('all-linear'),
        z
          .array(z.string().regex(/^[A-Za-z0-9_.]+$/, 'module names are letters, digits, _ and .'))
          .min(1)
          .max(64),
      ])
      .optional(),
    use_rslora: z.boolean().default(false),
  })
  .strict();
export type LoraConfigInput = z.input<typeof LoraConfigSchema>;
export type LoraConfigDto = z.output<typeof LoraConfigSchema>;
