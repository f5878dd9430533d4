/**
 * Parameter counts from config.json alone (no weights allocated), matching what PEFT's
 * `print_trainable_parameters` reports for the same model and LoRA config: shared
 * (tied) tensors count once, buffers do not count, and LoRA adds r·(in + out) per module.
 */
import type { ModelConfig } from '../models/model.config';
import {
  loraScaling,
  moduleNameMatches,
  validateLoraConfig,
  type LoraConfig,
} from '../lora/lora.config';
import { formatFixedLikePython, formatThousands } from '../util/python-format.util';

/** A linear layer as described by the config: the unit LoRA targets. */
export interface LinearModuleSpec {
  path: string;
  inFeatures: number;
  outFeatures: number;
  hasBias: boolean;
}

export interface ParameterCount {
  trainable: number;
  all: number;
  /** 100 · trainable / all. */
  percent: number;
}

/** Every linear layer of the `*ForCausalLM` model `config` describes, in module order. */
export function linearModuleSpecs(config: ModelConfig): LinearModuleSpec[] {
  const specs: LinearModuleSpec[] = [];
  const add = (path: string, inFeatures: number, outFeatures: number, hasBias: boolean) =>
    specs.push({ path, inFeatures, outFeatures, hasBias });
  if (config.modelType === 'gpt2') {
    const C = config.hiddenSize;
    for (let i = 0; i < config.numLayers; i++) {
      add(`transformer.h.${i}.attn.c_attn`, C, 3 * C, true);
      add(`transformer.h.${i}.attn.c_proj`, C, C, true);
      add(`transformer.h.${i}.mlp.c_fc`, C, config.innerSize, true);
      add(`transformer.h.${i}.mlp.c_proj`, config.innerSize, C, true);
    }
  } else {
    const {
      hiddenSize: C,
      numHeads: H,
      numKeyValueHeads: KV,
      headDim: D,
      intermediateSize: I,
    } = config;
    for (let i = 0; i < config.numLayers; i++) {
      const p = `model.layers.${i}`;
      add(`${p}.self_attn.q_proj`, C, H * D, config.attentionBias);
      add(`${p}.self_attn.k_proj`, C, KV * D, config.attentionBias);
      add(`${p}.self_attn.v_proj`, C, KV * D, config.attentionBias);
      add(`${p}.self_attn.o_proj`, H * D, C, config.attentionBias);
      add(`${p}.mlp.gate_proj`, C, I, config.mlpBias);
      add(`${p}.mlp.up_proj`, C, I, config.mlpBias);
      add(`${p}.mlp.down_proj`, I, C, config.mlpBias);
    }
  }
  if (!config.tieWordEmbeddings) add('lm_head', config.hiddenSize, config.vocabSize, false);
  return specs;
}

/** Linear layers a LoRA config selects, by PEFT's rules (all-linear skips lm_head). */
export function loraTargetSpecs(config: ModelConfig, lora: LoraConfig): LinearModuleSpec[] {
  const specs = linearModuleSpecs(config);
  const candidates =
    lora.targetModules === 'all-linear'
      ? specs.filter((s) => s.path !== 'lm_head')
      : specs.filter((s) => moduleNameMatches(s.path, lora.targetModules as string[]));
  return candidates.filter((s) => !moduleNameMatches(s.path, lora.excludeModules ?? []));
}

/** Base-model parameters (no LoRA). */
export function countBaseParameters(config: ModelConfig): number {
  let total = linearModuleSpecs(config).reduce(
    (sum, s) => sum + s.inFeatures * s.outFeatures + (s.hasBias ? s.outFeatures : 0),
    0,
  );
  const C = config.hiddenSize;
  total += config.vocabSize * C; // token embedding (shared with a tied lm_head)
  if (config.modelType === 'gpt2') {
    total += config.maxPositions * C; // wpe
    total += config.numLayers * 4 * C; // ln_1, ln_2: weight + bias
    total += 2 * C; // ln_f
  } else {
    total += config.numLayers * 2 * C; // input_layernorm, post_attention_layernorm
    total += C; // model.norm
  }
  return total;
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
  const trainable = loraTargetSpecs(config, lora).reduce(
    (sum, s) => sum + lora.r * (s.inFeatures + s.outFeatures),
    0,
  );
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
