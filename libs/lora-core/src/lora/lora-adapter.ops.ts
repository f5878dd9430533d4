/**
 * Free-function facade over `CausalLM`'s adapter bookkeeping, named after PEFT's
 * `PeftModel` methods so callers can read them side by side with PEFT code.
 */
import type { CausalLM } from '../models/causal-lm.model';
import type { LoraConfig } from './lora.config';

/** PEFT `add_adapter` (+ `get_peft_model` for the first one). Seeded A, zero B. */
export function addLoraAdapter(model: CausalLM, name: string, cfg: LoraConfig, seed: number): void {
  model.addAdapter(name, cfg, seed);
}

/** PEFT `set_adapter`: switches adapters without touching base weights. */
export function setActiveAdapter(model: CausalLM, name: string): void {
  model.setActiveAdapter(name);
}

/** PEFT `merge_adapter`: W0 ← W0 + scaling·B·A for the active (or named) adapter. */
export function mergeAdapter(model: CausalLM, name?: string): void {
  model.mergeAdapter(name ?? model.activeAdapter);
}

/** PEFT `unmerge_adapter`: subtracts every merged adapter again. */
export function unmergeAdapter(model: CausalLM): void {
  model.unmergeAdapter();
}

/** PEFT `disable_adapter()` context, as a switch: base output until `enableAdapters`. */
export function disableAdapters(model: CausalLM): void {
  model.disableAdapters();
}

export function enableAdapters(model: CausalLM): void {
  model.enableAdapters();
}

/** PEFT `delete_adapter`. */
export function deleteAdapter(model: CausalLM, name: string): void {
  model.deleteAdapter(name);
}
