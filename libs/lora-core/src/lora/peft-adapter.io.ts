/**
 * PEFT adapter files (DESIGN §5): `adapter_config.json` plus `adapter_model.safetensors`
 * with keys `base_model.model.<module path>.lora_A.weight` [r, in] and `.lora_B.weight`
 * [out, r], metadata `{"format":"pt"}`. Matches peft v0.17.0 `save_pretrained`.
 *
 * lorafleet keeps A as [in, r] and B as [r, out] (tfjs multiplies x·W), so export and
 * import transpose both. Transposition moves float32 values without arithmetic, so an
 * export → import round trip is bit-exact.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import type { CausalLM } from '../models/causal-lm.model';
import { transpose2d, type AdapterWeightsInit } from '../models/causal-lm.model';
import type { ModelType } from '../models/model.config';
import {
  readSafetensors,
  writeSafetensors,
  type SafetensorsInput,
} from '../safetensors/safetensors.codec';
import { FLOAT32_MAX, describeValueAt, indexOfNonFinite, maxAbs } from '../util/finite.util';
import { defaultTargetModules, loraScaling, type LoraConfig } from './lora.config';

/** Why a PEFT adapter cannot be loaded. `key` names the config field or tensor at fault. */
export class PeftAdapterError extends Error {
  override readonly name = 'PeftAdapterError';

  constructor(
    message: string,
    readonly key?: string,
  ) {
    super(message);
  }
}

export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
const KEY_PREFIX = 'base_model.model.';

export interface ExportedPeftAdapter {
  /** The `adapter_config.json` object. */
  adapterConfig: Record<string, unknown>;
  /** The `adapter_model.safetensors` bytes. */
  adapterSafetensors: Uint8Array;
}

/** PEFT forces fan_in_fan_out on for Conv1D (GPT-2) and off for nn.Linear. */
function fanInFanOutFor(modelType: ModelType): boolean {
  return modelType === 'gpt2';
}

/** Serialises adapter `adapterName` of `model` in PEFT's format. */
export function exportPeftAdapter(
  model: CausalLM,
  adapterName: string,
  baseModelNameOrPath: string,
): ExportedPeftAdapter {
  return serialisePeftAdapter(
    model,
    adapterName,
    model.adapterWeights(adapterName),
    baseModelNameOrPath,
  );
}

/**
 * `exportPeftAdapter()` reading the weights asynchronously: the webgpu backend has no
 * synchronous read. Same bytes on every backend.
 */
export async function exportPeftAdapterAsync(
  model: CausalLM,
  adapterName: string,
  baseModelNameOrPath: string,
): Promise<ExportedPeftAdapter> {
  return serialisePeftAdapter(
    model,
    adapterName,
    await model.adapterWeightsAsync(adapterName),
    baseModelNameOrPath,
  );
}

function serialisePeftAdapter(
  model: CausalLM,
  adapterName: string,
  weights: ReturnType<CausalLM['adapterWeights']>,
  baseModelNameOrPath: string,
): ExportedPeftAdapter {
  const cfg = model.loraConfig(adapterName);
  const tensors = new Map<string, SafetensorsInput>();
  for (const [path, w] of weights) {
    // tfjs A [in, r] → PEFT lora_A.weight [r, in]; tfjs B [r, out] → lora_B.weight [out, r].
    tensors.set(`${KEY_PREFIX}${path}.lora_A.weight`, {
      shape: [cfg.r, w.inFeatures],
      data: transpose2d(w.a, w.inFeatures, cfg.r),
    });
    tensors.set(`${KEY_PREFIX}${path}.lora_B.weight`, {
      shape: [w.outFeatures, cfg.r],
      data: transpose2d(w.b, cfg.r, w.outFeatures),
    });
  }
  const adapterConfig: Record<string, unknown> = {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: baseModelNameOrPath,
    bias: 'none',
    exclude_modules:
      cfg.excludeModules && cfg.excludeModules.length > 0 ? [...cfg.excludeModules] : null,
    fan_in_fan_out: fanInFanOutFor(model.config.modelType),
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: null,
    lora_alpha: cfg.alpha,
    lora_dropout: cfg.dropout,
    modules_to_save: null,
    peft_type: 'LORA',
    r: cfg.r,
    rank_pattern: {},
    revision: null,
    target_modules: [...(cfg.targetModules as string[])].sort(),
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: cfg.useRslora,
  };
  return { adapterConfig, adapterSafetensors: writeSafetensors(tensors, { format: 'pt' }) };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isSet(value: unknown): boolean {
  if (value === null || value === undefined || value === false) return false;
  if (Array.isArray(value)) return value.length > 0;
  if (isObject(value)) return Object.keys(value).length > 0;
  return true;
}

/**
 * PEFT features that change what an adapter means. Each is rejected by name when set,
 * because loading it while ignoring the feature would give silently wrong outputs.
 */
const UNSUPPORTED_FEATURES: ReadonlyArray<[key: string, why: string]> = [
  ['use_dora', 'DoRA magnitude vectors are not implemented'],
  ['rank_pattern', 'per-module ranks are not implemented'],
  ['alpha_pattern', 'per-module alphas are not implemented'],
  ['layers_to_transform', 'restricting LoRA to some layers is not implemented'],
  ['modules_to_save', 'fully trained extra modules are not implemented'],
  ['layer_replication', 'layer replication is not implemented'],
  ['use_qalora', 'QA-LoRA is not implemented'],
  ['lora_bias', 'LoRA bias terms on lora_B are not implemented'],
  ['trainable_token_indices', 'trainable token embeddings are not implemented'],
  ['target_parameters', 'LoRA on raw parameters is not implemented'],
  ['megatron_config', 'Megatron-parallel LoRA layers are not implemented'],
  ['alora_invocation_tokens', 'activated LoRA (aLoRA) is not implemented'],
  ['arrow_config', 'Arrow routing is not implemented'],
];

/** init_lora_weights values whose adapters are only valid against a modified base model. */
const BASE_MODIFYING_INITS = /^(pissa|olora|loftq|corda)/i;

function readPositiveInt(json: Record<string, unknown>, key: string, fallback?: number): number {
  const value = json[key] ?? fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new PeftAdapterError(
      `adapter_config.json: "${key}" must be a positive integer (got ${JSON.stringify(value)})`,
      key,
    );
  }
  return value;
}

function readNumber(json: Record<string, unknown>, key: string, fallback: number): number {
  const value = json[key] ?? fallback;
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new PeftAdapterError(
      `adapter_config.json: "${key}" must be a number (got ${JSON.stringify(value)})`,
      key,
    );
  }
  return value;
}

function readModuleList(
  json: Record<string, unknown>,
  key: string,
): string[] | 'all-linear' | null {
  const value = json[key];
  if (value === null || value === undefined) return null;
  if (value === 'all-linear' && key === 'target_modules') return 'all-linear';
  if (typeof value === 'string') {
    throw new PeftAdapterError(
      `adapter_config.json: "${key}" is a regular expression (${JSON.stringify(value)}); only lists of module names are supported`,
      key,
    );
  }
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string' && v.length > 0)) {
    throw new PeftAdapterError(`adapter_config.json: "${key}" must be a list of module names`, key);
  }
  return value as string[];
}

/**
 * Validates a parsed `adapter_config.json` and converts it to a `LoraConfig`. Unknown keys
 * are ignored (PEFT adds keys every release); known features that are set but not
 * implemented raise a `PeftAdapterError` naming the key.
 */
export function parsePeftAdapterConfig(json: unknown, modelType: ModelType): LoraConfig {
  if (!isObject(json)) throw new PeftAdapterError('adapter_config.json must be a JSON object');
  if (json.peft_type !== 'LORA') {
    throw new PeftAdapterError(
      `adapter_config.json: peft_type ${JSON.stringify(json.peft_type)} is not "LORA"`,
      'peft_type',
    );
  }
  if (json.task_type !== undefined && json.task_type !== null && json.task_type !== 'CAUSAL_LM') {
    throw new PeftAdapterError(
      `adapter_config.json: task_type ${JSON.stringify(json.task_type)} is not supported (only CAUSAL_LM)`,
      'task_type',
    );
  }
  for (const [key, why] of UNSUPPORTED_FEATURES) {
    if (isSet(json[key]))
      throw new PeftAdapterError(`adapter_config.json: "${key}" is set but ${why}`, key);
  }
  const bias = json.bias ?? 'none';
  if (bias !== 'none') {
    throw new PeftAdapterError(
      `adapter_config.json: bias ${JSON.stringify(bias)} is not supported (only "none")`,
      'bias',
    );
  }
  const init = json.init_lora_weights;
  if (typeof init === 'string' && BASE_MODIFYING_INITS.test(init)) {
    throw new PeftAdapterError(
      `adapter_config.json: init_lora_weights "${init}" means the base weights were modified; convert the adapter to plain LoRA first`,
      'init_lora_weights',
    );
  }
  const useRslora = json.use_rslora ?? false;
  if (typeof useRslora !== 'boolean') {
    throw new PeftAdapterError('adapter_config.json: "use_rslora" must be a boolean', 'use_rslora');
  }
  const dropout = readNumber(json, 'lora_dropout', 0);
  if (dropout < 0 || dropout >= 1) {
    throw new PeftAdapterError(
      `adapter_config.json: "lora_dropout" must be in [0, 1) (got ${dropout})`,
      'lora_dropout',
    );
  }
  const alpha = readNumber(json, 'lora_alpha', 8);
  if (alpha <= 0)
    throw new PeftAdapterError('adapter_config.json: "lora_alpha" must be positive', 'lora_alpha');
  const excludeModules = readModuleList(json, 'exclude_modules');
  const cfg: LoraConfig = {
    r: readPositiveInt(json, 'r', 8),
    alpha,
    dropout,
    // A missing target list means PEFT's per-architecture default.
    targetModules: readModuleList(json, 'target_modules') ?? defaultTargetModules(modelType),
    useRslora,
    fanInFanOut: fanInFanOutFor(modelType),
  };
  if (excludeModules !== null && excludeModules !== 'all-linear')
    cfg.excludeModules = excludeModules;
  // tfjs multiplies in float32: a scaling past its range (lora_alpha 1e308) is infinite there
  // and turns every output of a targeted layer into NaN.
  const scaling = loraScaling(cfg);
  if (scaling > FLOAT32_MAX) {
    throw new PeftAdapterError(
      `adapter_config.json: "lora_alpha" ${alpha} gives a LoRA scaling of ${scaling}, beyond float32's range`,
      'lora_alpha',
    );
  }
  return cfg;
}

/** Maps a saved key's module path to the model's `*ForCausalLM` path. */
function canonicalModulePath(path: string, modelType: ModelType): string {
  if (path === 'lm_head') return path;
  const prefix = modelType === 'gpt2' ? 'transformer.' : 'model.';
  // An adapter trained on a bare GPT2Model/LlamaModel lacks the prefix.
  return path.startsWith(prefix) ? path : `${prefix}${path}`;
}

/**
 * Adds the PEFT adapter (`adapter_config.json` content, as a JSON string or parsed object,
 * plus `adapter_model.safetensors` bytes) to `model` under `name`. Every tensor must belong
 * to a targeted module with the right shape, and every targeted module must have both
 * tensors; anything else raises a `PeftAdapterError` naming the key.
 */
export function importPeftAdapter(
  model: CausalLM,
  name: string,
  adapterConfigJson: unknown,
  safetensorsBytes: Uint8Array,
): LoraConfig {
  const { config, weights } = decodePeftAdapter(model, adapterConfigJson, safetensorsBytes);
  model.addAdapter(name, config, weights);
  return model.loraConfig(name);
}

/**
 * `importPeftAdapter()`'s validation and decoding without adding anything to `model`: the
 * config and, per targeted module path, A [in, r] and B [r, out] in tfjs layout. The serving
 * adapter registry keeps these outside the model (serving/adapter-registry.ts).
 */
export function decodePeftAdapter(
  model: CausalLM,
  adapterConfigJson: unknown,
  safetensorsBytes: Uint8Array,
): { config: LoraConfig; weights: AdapterWeightsInit } {
  let json = adapterConfigJson;
  if (typeof json === 'string') {
    try {
      json = JSON.parse(json) as unknown;
    } catch (error) {
      throw new PeftAdapterError(
        `adapter_config.json is not valid JSON: ${(error as Error).message}`,
      );
    }
  }
  const modelType = model.config.modelType;
  const cfg = parsePeftAdapterConfig(json, modelType);
  const targets = new Map(model.resolveTargets(cfg).map((l) => [l.path, l]));
  if (targets.size === 0) {
    throw new PeftAdapterError(
      `target_modules ${JSON.stringify(cfg.targetModules)} match no layer of this ${modelType} model`,
      'target_modules',
    );
  }

  const halves = new Map<
    string,
    { a?: Float32Array; b?: Float32Array; maxA?: number; maxB?: number }
  >();
  const scaling = loraScaling(cfg);
  for (const [key, tensor] of readSafetensors(safetensorsBytes).tensors) {
    const match = /^base_model\.model\.(.+)\.(lora_A|lora_B)\.weight$/.exec(key);
    if (!match) {
      throw new PeftAdapterError(
        `adapter_model.safetensors: tensor "${key}" is not a LoRA A/B weight this loader supports`,
        key,
      );
    }
    const path = canonicalModulePath(match[1], modelType);
    const layer = targets.get(path);
    if (!layer) {
      throw new PeftAdapterError(
        `adapter_model.safetensors: tensor "${key}" belongs to "${path}", which target_modules does not select in this model`,
        key,
      );
    }
    const isA = match[2] === 'lora_A';
    const expected = isA ? [cfg.r, layer.inFeatures] : [layer.outFeatures, cfg.r];
    if (
      tensor.shape.length !== 2 ||
      tensor.shape[0] !== expected[0] ||
      tensor.shape[1] !== expected[1]
    ) {
      throw new PeftAdapterError(
        `adapter_model.safetensors: tensor "${key}" has shape ${JSON.stringify(tensor.shape)}, expected ${JSON.stringify(expected)} (r=${cfg.r})`,
        key,
      );
    }
    const bad = indexOfNonFinite(tensor.data);
    if (bad >= 0) {
      throw new PeftAdapterError(
        `adapter_model.safetensors: tensor "${key}" holds a non-finite value (${describeValueAt(tensor.data, bad)})`,
        key,
      );
    }
    const entry = halves.get(path) ?? {};
    if (isA) entry.maxA = maxAbs(tensor.data);
    else entry.maxB = maxAbs(tensor.data);
    // PEFT [r, in] → tfjs A [in, r]; PEFT [out, r] → tfjs B [r, out].
    if (isA) entry.a = transpose2d(tensor.data, cfg.r, layer.inFeatures);
    else entry.b = transpose2d(tensor.data, layer.outFeatures, cfg.r);
    halves.set(path, entry);
  }

  const init: AdapterWeightsInit = new Map();
  for (const path of targets.keys()) {
    const entry = halves.get(path);
    if (!entry?.a || !entry.b) {
      const missing = `${KEY_PREFIX}${path}.${entry?.a ? 'lora_B' : 'lora_A'}.weight`;
      throw new PeftAdapterError(
        `adapter_model.safetensors: missing tensor "${missing}" for targeted module "${path}"`,
        missing,
      );
    }
    // Each entry of scaling·(A·B) is at most scaling·r·max|A|·max|B|: finite weights whose
    // update can still overflow float32 (a huge lora_alpha) are refused before they make NaN.
    const bound = scaling * cfg.r * (entry.maxA ?? 0) * (entry.maxB ?? 0);
    if (!(bound <= FLOAT32_MAX)) {
      throw new PeftAdapterError(
        `adapter "${path}": lora_alpha ${cfg.alpha} (scaling ${scaling}) times these weights can exceed float32's range`,
        'lora_alpha',
      );
    }
    init.set(path, { a: entry.a, b: entry.b });
  }
  return { config: cfg, weights: init };
}

/** Writes `adapter_config.json` and `adapter_model.safetensors` into `dir`. */
export async function savePeftAdapter(dir: string, exported: ExportedPeftAdapter): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(
    join(dir, ADAPTER_CONFIG_FILE),
    `${JSON.stringify(exported.adapterConfig, null, 2)}\n`,
  );
  await writeFile(join(dir, ADAPTER_WEIGHTS_FILE), exported.adapterSafetensors);
}

/** Reads a PEFT adapter directory into `model` under `name`. */
export async function loadPeftAdapter(
  model: CausalLM,
  name: string,
  dir: string,
): Promise<LoraConfig> {
  let configText: string;
  let weights: Uint8Array;
  try {
    configText = await readFile(join(dir, ADAPTER_CONFIG_FILE), 'utf8');
    weights = await readFile(join(dir, ADAPTER_WEIGHTS_FILE));
  } catch (error) {
    throw new PeftAdapterError(`cannot read PEFT adapter in ${dir}: ${(error as Error).message}`);
  }
  return importPeftAdapter(model, name, configText, weights);
}
