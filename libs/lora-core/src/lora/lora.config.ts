/**
 * LoRA hyperparameters with PEFT's names and meanings (peft `LoraConfig`, see
 * https://github.com/huggingface/peft/blob/v0.17.0/src/peft/tuners/lora/config.py).
 */
export interface LoraConfig {
  /** Rank r of ΔW = B·A (PEFT `r`). */
  r: number;
  /** Numerator of the scaling factor (PEFT `lora_alpha`). */
  alpha: number;
  /** Dropout probability on the adapter input during training (PEFT `lora_dropout`). */
  dropout: number;
  /**
   * Module names to adapt. An entry matches a module whose path equals it or ends with
   * `.` + entry (PEFT's list semantics). `'all-linear'` means every linear layer except
   * the output head.
   */
  targetModules: string[] | 'all-linear';
  /** rsLoRA (Kalajdzievski 2023): scale by α/√r instead of α/r (PEFT `use_rslora`). */
  useRslora: boolean;
  /**
   * PEFT `fan_in_fan_out`: true when the base layer stores its weight as [in, out]
   * (GPT-2's Conv1D). lorafleet derives the layout from the architecture, so this is
   * informational; export always writes the value PEFT would force for the model.
   */
  fanInFanOut?: boolean;
  /** Module names excluded after target matching (PEFT `exclude_modules`, list form). */
  excludeModules?: string[];
}

export class LoraConfigError extends Error {
  override readonly name = 'LoraConfigError';

  constructor(
    message: string,
    readonly key?: string,
  ) {
    super(message);
  }
}

// PEFT's default targets are config-only knowledge: libs/data holds them for the API too.
export { defaultTargetModules } from '@lorafleet/data';

/** The scale applied to B·A·x: α/r, or α/√r under rsLoRA. */
export function loraScaling(cfg: Pick<LoraConfig, 'r' | 'alpha' | 'useRslora'>): number {
  return cfg.useRslora ? cfg.alpha / Math.sqrt(cfg.r) : cfg.alpha / cfg.r;
}

/** Throws a `LoraConfigError` naming the field when a config is unusable. */
export function validateLoraConfig(cfg: LoraConfig): void {
  if (!Number.isSafeInteger(cfg.r) || cfg.r <= 0) {
    throw new LoraConfigError(`lora r must be a positive integer (got ${cfg.r})`, 'r');
  }
  if (!Number.isFinite(cfg.alpha) || cfg.alpha <= 0) {
    throw new LoraConfigError(`lora alpha must be a positive number (got ${cfg.alpha})`, 'alpha');
  }
  if (!Number.isFinite(cfg.dropout) || cfg.dropout < 0 || cfg.dropout >= 1) {
    throw new LoraConfigError(`lora dropout must be in [0, 1) (got ${cfg.dropout})`, 'dropout');
  }
  if (cfg.targetModules !== 'all-linear') {
    if (!Array.isArray(cfg.targetModules) || cfg.targetModules.length === 0) {
      throw new LoraConfigError(
        'lora targetModules must be a non-empty list or "all-linear"',
        'targetModules',
      );
    }
    for (const entry of cfg.targetModules) {
      if (typeof entry !== 'string' || entry.length === 0) {
        throw new LoraConfigError(
          'lora targetModules entries must be non-empty strings',
          'targetModules',
        );
      }
    }
  }
}

/** PEFT's list matching rule (`check_target_module_exists`): exact path or `.`-suffix. */
export function moduleNameMatches(path: string, entries: readonly string[]): boolean {
  return entries.some((entry) => path === entry || path.endsWith(`.${entry}`));
}
