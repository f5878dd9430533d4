/**
 * Parameter counts from config.json alone (no weights allocated), matching what PEFT's
 * `print_trainable_parameters` reports for the same model and LoRA config: shared
 * (tied) tensors count once, buffers do not count, and LoRA adds r·(in + out) per module.
 */
import {
  countBaseParameters,
  countLoraTargets,
  linearModuleSpecs,
  type LinearModuleSpec,
  type LoraTargetSelection,
  type ParameterShape,
} from '@lorafleet/data';

import type { ModelConfig } from '../models/model.config';
import {
  loraScaling,
  moduleNameMatches,
  validateLoraConfig,
  type LoraConfig,
} from '../lora/lora.config';
import { formatFixedLikePython, formatThousands } from '../util/python-format.util';

// The arithmetic lives in libs/data (the API counts without tfjs); lora-core's public names
// stay here so its callers and exports are unchanged.
export {
  countBaseParameters,
  countLoraTargets,
  linearModuleSpecs,
  type LinearModuleSpec,
  type LoraTargetCount,
} from '@lorafleet/data';

export interface ParameterCount {
  trainable: number;
  all: number;
  /** 100 · trainable / all. */
  percent: number;
}

/** Linear layers a LoRA config selects, by PEFT's rules (all-linear skips lm_head). */
export function loraTargetSpecs(
  config: ParameterShape,
  lora: Pick<LoraTargetSelection, 'targetModules' | 'excludeModules'>,
): LinearModuleSpec[] {
  const specs = linearModuleSpecs(config);
  const candidates =
    lora.targetModules === 'all-linear'
      ? specs.filter((s) => s.path !== 'lm_head')
      : specs.filter((s) => moduleNameMatches(s.path, lora.targetModules as readonly string[]));
  return candidates.filter((s) => !moduleNameMatches(s.path, lora.excludeModules ?? []));
}

/**
 * Trainable and total parameters. Without `lora`, full fine-tuning: everything trains.
 * With `lora`, the adapter's A and B are added to the total and are the only trainables.
 */
export function countParameters(config: ModelConfig, lora?: LoraConfig): ParameterCount {
  const base = countBaseParameters(config);
  if (!lora) return { trainable: base, all: base, percent: 100 };
  validateLoraConfig(lora);
  loraScaling(lora);
  const trainable = countLoraTargets(config, lora).parameters;
  const all = base + trainable;
  return { trainable, all, percent: (100 * trainable) / all };
}

/** PEFT's line, e.g. `trainable params: 294,912 || all params: 124,734,720 || trainable%: 0.2364`. */
export function formatTrainableParameters(count: ParameterCount): string {
  return (
    `trainable params: ${formatThousands(count.trainable)} || all params: ${formatThousands(count.all)}` +
    ` || trainable%: ${formatFixedLikePython((100 * count.trainable) / count.all, 4)}`
  );
}
