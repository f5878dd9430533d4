/**
 * Parameter counts from config.json alone (no weights allocated), matching what PEFT's
 * `print_trainable_parameters` reports for the same model and LoRA config: shared
 * (tied) tensors count once, buffers do not count, and LoRA adds r·(in + out) per module.
 */
import { templateLayersMatched } from '@lorafleet/data';

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

/**
 * A linear layer of every block (`{i}` in `path` stands for the layer index) or, without
 * `{i}`, one of the model (`lm_head`). Counting works on these, never on per-layer lists: a
 * config's layer count must not decide how much a count allocates.
 */
interface LinearModuleTemplate extends LinearModuleSpec {
  perLayer: boolean;
}

function linearModuleTemplates(config: ModelConfig): LinearModuleTemplate[] {
  const templates: LinearModuleTemplate[] = [];
  const add = (path: string, inFeatures: number, outFeatures: number, hasBias: boolean) =>
    templates.push({ path, inFeatures, outFeatures, hasBias, perLayer: path.includes('{i}') });
  if (config.modelType === 'gpt2') {
    const C = config.hiddenSize;
    add('transformer.h.{i}.attn.c_attn', C, 3 * C, true);
    add('transformer.h.{i}.attn.c_proj', C, C, true);
    add('transformer.h.{i}.mlp.c_fc', C, config.innerSize, true);
    add('transformer.h.{i}.mlp.c_proj', config.innerSize, C, true);
  } else {
    const {
      hiddenSize: C,
      numHeads: H,
      numKeyValueHeads: KV,
      headDim: D,
      intermediateSize: I,
    } = config;
    const { qkvBias, oProjBias, mlpBias } = config;
    if (config.fusedProjections) {
      // Phi-3: one qkv_proj (q, k, v rows) and one gate_up_proj (gate, up rows).
      add('model.layers.{i}.self_attn.qkv_proj', C, (H + 2 * KV) * D, qkvBias);
    } else {
      add('model.layers.{i}.self_attn.q_proj', C, H * D, qkvBias);
      add('model.layers.{i}.self_attn.k_proj', C, KV * D, qkvBias);
      add('model.layers.{i}.self_attn.v_proj', C, KV * D, qkvBias);
    }
    add('model.layers.{i}.self_attn.o_proj', H * D, C, oProjBias);
    if (config.fusedProjections) {
      add('model.layers.{i}.mlp.gate_up_proj', C, 2 * I, mlpBias);
    } else {
      add('model.layers.{i}.mlp.gate_proj', C, I, mlpBias);
      add('model.layers.{i}.mlp.up_proj', C, I, mlpBias);
    }
    add('model.layers.{i}.mlp.down_proj', I, C, mlpBias);
  }
  if (!config.tieWordEmbeddings) add('lm_head', config.hiddenSize, config.vocabSize, false);
  return templates;
}

/**
 * Every linear layer of the `*ForCausalLM` model `config` describes, in module order. One
 * entry per layer and module: for callers that need the modules themselves (building a
 * model), not for counting.
 */
export function linearModuleSpecs(config: ModelConfig): LinearModuleSpec[] {
  const templates = linearModuleTemplates(config);
  const specs: LinearModuleSpec[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    for (const { perLayer, path, ...shape } of templates) {
      if (perLayer) specs.push({ ...shape, path: path.replace('{i}', String(i)) });
    }
  }
  for (const { perLayer, ...spec } of templates) if (!perLayer) specs.push(spec);
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

/** Modules of one template that some entry selects: all of them, or these layer indices. */
interface Selection {
  all: boolean;
  layers: Set<number>;
}

function select(
  template: LinearModuleTemplate,
  numLayers: number,
  entries: readonly string[],
): Selection {
  const selection: Selection = { all: false, layers: new Set() };
  for (const entry of entries) {
    const matched = templateLayersMatched(template.path, numLayers, entry);
    if (matched === 'all') selection.all = true;
    else if (matched !== null) selection.layers.add(matched);
  }
  return selection;
}

/** How many modules LoRA wraps and the adapter's parameters, r·(in + out) per module. */
export interface LoraTargetCount {
  modules: number;
  parameters: number;
}

/**
 * What {@link loraTargetSpecs} selects, counted per template instead of listed per layer:
 * the same PEFT rules (an entry names a module or one layer's module; all-linear skips
 * lm_head; `excludeModules` wins), in time and memory independent of the layer count.
 */
export function countLoraTargets(
  config: ModelConfig,
  lora: Pick<LoraConfig, 'r' | 'targetModules' | 'excludeModules'>,
): LoraTargetCount {
  let modules = 0;
  let parameters = 0;
  for (const template of linearModuleTemplates(config)) {
    const copies = template.perLayer ? config.numLayers : 1;
    const included: Selection =
      lora.targetModules === 'all-linear'
        ? { all: template.path !== 'lm_head', layers: new Set() }
        : select(template, config.numLayers, lora.targetModules);
    const excluded = select(template, config.numLayers, lora.excludeModules ?? []);
    let selected: number;
    if (excluded.all) selected = 0;
    else if (included.all) selected = copies - excluded.layers.size;
    else selected = [...included.layers].filter((i) => !excluded.layers.has(i)).length;
    modules += selected;
    parameters += selected * lora.r * (template.inFeatures + template.outFeatures);
  }
  return { modules, parameters };
}

/** Base-model parameters (no LoRA), by arithmetic on the config. */
export function countBaseParameters(config: ModelConfig): number {
  let total = 0;
  for (const t of linearModuleTemplates(config)) {
    const perModule = t.inFeatures * t.outFeatures + (t.hasBias ? t.outFeatures : 0);
    total += (t.perLayer ? config.numLayers : 1) * perModule;
  }
  const C = config.hiddenSize;
  total += config.vocabSize * C; // token embedding (shared with a tied lm_head)
  if (config.modelType === 'gpt2') {
    total += config.maxPositions * C; // wpe
    total += config.numLayers * 4 * C; // ln_1, ln_2: weight + bias
    total += 2 * C; // ln_f
  } else {
    total += config.numLayers * 2 * C; // input_layernorm, post_attention_layernorm
    if (config.qkNorm) total += config.numLayers * 2 * config.headDim; // q_norm, k_norm
    if (config.sandwichNorms) total += config.numLayers * 2 * C; // pre/post_feedforward_layernorm
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
