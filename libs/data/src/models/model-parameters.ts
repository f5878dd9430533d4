/**
 * Parameter arithmetic from config.json alone (no weights, no tfjs), matching what PEFT's
 * `print_trainable_parameters` reports for the same model: shared (tied) tensors count once,
 * buffers do not count, and LoRA adds r·(in + out) per module. It lives here, not in
 * libs/lora-core, so the API (which may not load tfjs) can report and check the same numbers
 * the trainer does; lora-core re-exports it and builds its layers from `linearModuleSpecs`.
 */
/** The rotary decoder families: Llama's module names, or Phi-3's fused ones. */
export type DecoderFamily = 'llama' | 'mistral' | 'qwen2' | 'qwen3' | 'phi3' | 'gemma2';

/** The architectures lorafleet trains (lora-core's `ModelType`). */
export type ArchitectureType = 'gpt2' | DecoderFamily;

/**
 * The sizes and switches a parameter count needs. lora-core's parsed `ModelConfig` has this
 * shape (and more), so both libraries count with the same code.
 */
export type ParameterShape = Gpt2ParameterShape | DecoderParameterShape;

interface CommonParameterShape {
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  /** Whether `lm_head` shares the token-embedding matrix (counted once, as PEFT does). */
  tieWordEmbeddings: boolean;
}

export interface Gpt2ParameterShape extends CommonParameterShape {
  modelType: 'gpt2';
  /** GPT-2's learned position table has this many rows. */
  maxPositions: number;
  innerSize: number;
}

export interface DecoderParameterShape extends CommonParameterShape, DecoderParameterFlags {
  modelType: DecoderFamily;
  numHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  intermediateSize: number;
}

/** The per-family switches that change which tensors exist. */
export interface DecoderParameterFlags {
  qkvBias: boolean;
  oProjBias: boolean;
  mlpBias: boolean;
  /** Qwen3's per-head `q_norm`, `k_norm` (weight [head_dim]). */
  qkNorm: boolean;
  /** Phi-3's fused `qkv_proj` and `gate_up_proj`. */
  fusedProjections: boolean;
  /** Gemma 2's `pre_`/`post_feedforward_layernorm`. */
  sandwichNorms: boolean;
}

/** Whether a family reads `attention_bias` from its config (the others never have one). */
export function readsAttentionBias(family: DecoderFamily): boolean {
  return family === 'llama' || family === 'qwen3' || family === 'gemma2';
}

/**
 * The tensor switches of `family`, given its config's `attention_bias` and `mlp_bias`. Llama,
 * Qwen3 and Gemma 2 put `attention_bias` on all four projections; Qwen2 has q/k/v biases and
 * none on o_proj; Mistral and Phi-3 have none; only Llama reads `mlp_bias`. One function, so
 * lora-core's parser and this library's counts cannot disagree about which tensors exist.
 */
export function decoderParameterFlags(
  family: DecoderFamily,
  attentionBias: boolean,
  mlpBias: boolean,
): DecoderParameterFlags {
  const bias = readsAttentionBias(family) && attentionBias;
  return {
    qkvBias: family === 'qwen2' || bias,
    oProjBias: bias,
    mlpBias: family === 'llama' && mlpBias,
    qkNorm: family === 'qwen3',
    fusedProjections: family === 'phi3',
    sandwichNorms: family === 'gemma2',
  };
}

/** A linear layer as described by the config: the unit LoRA targets. */
export interface LinearModuleSpec {
  path: string;
  inFeatures: number;
  outFeatures: number;
  hasBias: boolean;
}

/**
 * A linear layer of every block (`{i}` in `path` stands for the layer index) or, without
 * `{i}`, one of the model (`lm_head`). Counting works on these, never on per-layer lists: a
 * config's layer count must not decide how much a count allocates.
 */
export interface LinearModuleTemplate extends LinearModuleSpec {
  perLayer: boolean;
}

/** The linear layers of one block (and `lm_head` when untied), in module order. */
export function linearModuleTemplates(shape: ParameterShape): LinearModuleTemplate[] {
  const templates: LinearModuleTemplate[] = [];
  const add = (path: string, inFeatures: number, outFeatures: number, hasBias: boolean) =>
    templates.push({ path, inFeatures, outFeatures, hasBias, perLayer: path.includes('{i}') });
  if (shape.modelType === 'gpt2') {
    const C = shape.hiddenSize;
    add('transformer.h.{i}.attn.c_attn', C, 3 * C, true);
    add('transformer.h.{i}.attn.c_proj', C, C, true);
    add('transformer.h.{i}.mlp.c_fc', C, shape.innerSize, true);
    add('transformer.h.{i}.mlp.c_proj', shape.innerSize, C, true);
  } else {
    const {
      hiddenSize: C,
      numHeads: H,
      numKeyValueHeads: KV,
      headDim: D,
      intermediateSize: I,
    } = shape;
    const { qkvBias, oProjBias, mlpBias } = shape;
    if (shape.fusedProjections) {
      // Phi-3: one qkv_proj (q, k, v rows) and one gate_up_proj (gate, up rows).
      add('model.layers.{i}.self_attn.qkv_proj', C, (H + 2 * KV) * D, qkvBias);
    } else {
      add('model.layers.{i}.self_attn.q_proj', C, H * D, qkvBias);
      add('model.layers.{i}.self_attn.k_proj', C, KV * D, qkvBias);
      add('model.layers.{i}.self_attn.v_proj', C, KV * D, qkvBias);
    }
    add('model.layers.{i}.self_attn.o_proj', H * D, C, oProjBias);
    if (shape.fusedProjections) {
      add('model.layers.{i}.mlp.gate_up_proj', C, 2 * I, mlpBias);
    } else {
      add('model.layers.{i}.mlp.gate_proj', C, I, mlpBias);
      add('model.layers.{i}.mlp.up_proj', C, I, mlpBias);
    }
    add('model.layers.{i}.mlp.down_proj', I, C, mlpBias);
  }
  if (!shape.tieWordEmbeddings) add('lm_head', shape.hiddenSize, shape.vocabSize, false);
  return templates;
}

/**
 * Every linear layer of the `*ForCausalLM` model `shape` describes, in module order. One
 * entry per layer and module: for callers that need the modules themselves (building a
 * model), not for counting.
 */
export function linearModuleSpecs(shape: ParameterShape): LinearModuleSpec[] {
  const templates = linearModuleTemplates(shape);
  const specs: LinearModuleSpec[] = [];
  for (let i = 0; i < shape.numLayers; i++) {
    for (const { perLayer, path, ...rest } of templates) {
      if (perLayer) specs.push({ ...rest, path: path.replace('{i}', String(i)) });
    }
  }
  for (const { perLayer, ...spec } of templates) if (!perLayer) specs.push(spec);
  return specs;
}

/** Base-model parameters (no LoRA), by arithmetic on the config. */
export function countBaseParameters(shape: ParameterShape): number {
  let total = 0;
  for (const t of linearModuleTemplates(shape)) {
    const perModule = t.inFeatures * t.outFeatures + (t.hasBias ? t.outFeatures : 0);
    total += (t.perLayer ? shape.numLayers : 1) * perModule;
  }
  const C = shape.hiddenSize;
  total += shape.vocabSize * C; // token embedding (shared with a tied lm_head)
  if (shape.modelType === 'gpt2') {
    total += shape.maxPositions * C; // wpe
    total += shape.numLayers * 4 * C; // ln_1, ln_2: weight + bias
    total += 2 * C; // ln_f
  } else {
    total += shape.numLayers * 2 * C; // input_layernorm, post_attention_layernorm
    if (shape.qkNorm) total += shape.numLayers * 2 * shape.headDim; // q_norm, k_norm
    if (shape.sandwichNorms) total += shape.numLayers * 2 * C; // pre/post_feedforward_layernorm
    total += C; // model.norm
  }
  return total;
}

/**
 * The modules of `template` that PEFT's rule (a module path equal to the entry, or ending in
 * `.<entry>`) selects for `entry`: `'all'` of them (every layer, or the one module of a
 * template without `{i}`), the one layer whose index the entry names, or none (null). Worked
 * out on the template, so a model with two thousand layers costs no more than one with two.
 * libs/lora-core counts LoRA parameters with it.
 */
export function templateLayersMatched(
  template: string,
  numLayers: number,
  entry: string,
): 'all' | number | null {
  const matches = (pathText: string) => pathText === entry || pathText.endsWith(`.${entry}`);
  if (!template.includes('.{i}.')) return matches(template) ? 'all' : null;
  const [prefix, suffix] = template.split('.{i}.');
  // Entries within the part after the index (`c_attn`, `attn.c_attn`) match every layer.
  if (matches(suffix)) return 'all';
  if (entry !== suffix && !entry.endsWith(`.${suffix}`)) return null;
  // The rest of the entry must end at a layer index: `3`, `h.3`, `transformer.h.3`.
  const head = entry === suffix ? '' : entry.slice(0, -(suffix.length + 1));
  const dot = head.lastIndexOf('.');
  const index = head.slice(dot + 1);
  const before = dot < 0 ? '' : head.slice(0, dot);
  if (!/^(0|[1-9]\d*)$/.test(index) || Number(index) >= numLayers) return null;
  return before === '' || prefix === before || prefix.endsWith(`.${before}`) ? Number(index) : null;
}

/** The LoRA settings a count depends on (PEFT's `r`, `target_modules`, `exclude_modules`). */
export interface LoraTargetSelection {
  r: number;
  targetModules: readonly string[] | 'all-linear';
  excludeModules?: readonly string[];
}

/** How many modules LoRA wraps and the adapter's parameters, r·(in + out) per module. */
export interface LoraTargetCount {
  modules: number;
  parameters: number;
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

/**
 * The modules a LoRA config selects, counted per template instead of listed per layer, by
 * PEFT's rules (an entry names a module or one layer's module; all-linear skips lm_head;
 * `excludeModules` wins), in time and memory independent of the layer count.
 */
export function countLoraTargets(shape: ParameterShape, lora: LoraTargetSelection): LoraTargetCount {
  let modules = 0;
  let parameters = 0;
  for (const template of linearModuleTemplates(shape)) {
    const copies = template.perLayer ? shape.numLayers : 1;
    const included: Selection =
      lora.targetModules === 'all-linear'
        ? { all: template.path !== 'lm_head', layers: new Set() }
        : select(template, shape.numLayers, lora.targetModules);
    const excluded = select(template, shape.numLayers, lora.excludeModules ?? []);
    let selected: number;
    if (excluded.all) selected = 0;
    else if (included.all) selected = copies - excluded.layers.size;
    else selected = [...included.layers].filter((i) => !excluded.layers.has(i)).length;
    modules += selected;
    parameters += selected * lora.r * (template.inFeatures + template.outFeatures);
  }
  return { modules, parameters };
}

/**
 * PEFT's `TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING` entries for our architectures
 * (peft v0.17.0 `utils/constants.py`). PEFT has no entry for `phi3` (it asks for
 * `target_modules`); lorafleet's own choice there is the fused attention input `qkv_proj`,
 * the layer that holds what q_proj and v_proj are elsewhere.
 */
export function defaultTargetModules(modelType: ArchitectureType): string[] {
  switch (modelType) {
    case 'gpt2':
      return ['c_attn'];
    case 'llama':
    case 'mistral':
    case 'qwen2':
    case 'qwen3':
    case 'gemma2':
      return ['q_proj', 'v_proj'];
    case 'phi3':
      return ['qkv_proj'];
  }
}
