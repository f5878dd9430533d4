/**
 * `runFineTune`: the one call the worker's trainer child (and `lorafleet train`) makes. JSONL
 * in, PEFT adapter out, with the pre-flight, progress, evaluation, checkpoints, resume,
 * final validation, sample generations and the step-metrics CSV (DESIGN §6, issue 4).
 * A DPO spec (issue 20) reads preference JSONL and trains on pairs (trainer.ts).
 * docs/trainer.md is its manual.
 */
import { createHash } from 'node:crypto';
import { basename } from 'node:path';
import * as tf from '@tensorflow/tfjs';

import type { FineTuneSpec, Lineage, LoraConfigDto } from '@lorafleet/contracts';
import {
  loadTokenizer,
  parseJsonlExamples,
  parsePreferenceJsonl,
  preferenceChats,
  preferencePreflightSummary,
  preflightSummary,
  tokenizeExample,
  tokenizePreferencePair,
  trainingMemoryInput,
  type PreferenceExample,
  type PreflightSummary,
  type TextTokenizer,
  type TrainingExample,
} from '@lorafleet/data';

import { hostWeightKernelsActive } from '../backend/host-weight.kernels';
import { deviceBindingLimitBytes, initWebgpuBackend } from '../backend/webgpu.backend';
import { exportPeftAdapterAsync, type ExportedPeftAdapter } from '../lora/peft-adapter.io';
import { defaultTargetModules, type LoraConfig } from '../lora/lora.config';
import type { CausalLM } from '../models/causal-lm.model';
import {
  MemoryLimitError,
  WASM_HEAP_BUDGET_BYTES,
  WasmHeapLimitError,
  checkWebgpuFits,
  estimateTrainingMemory,
  gpuMemoryLimitMbFromEnv,
  wasmHeapBytes,
  memoryAdvice,
  type MemoryEstimate,
  type MemoryEstimateInput,
} from '../memory/memory-estimate';
import { loadCausalLM, readModelConfig } from '../models/hf-model.loader';
import { contextLength, type ModelConfig } from '../models/model.config';
import { generateSamples, type SampleGeneration } from './evaluation';
import { metricsToCsv } from './metrics-csv';
import type { TokenizedPair } from './preference-pass';
import { Trainer, type CheckpointOptions } from './trainer';
import {
  TrainingConfigError,
  checkFineTuneSpec,
  type EarlyStoppingOptions,
  type EvalMetrics,
  type EvalReport,
  type StepMetrics,
  type StopReason,
  type TrainingProgress,
} from './trainer.types';

export interface LoadedModel {
  model: CausalLM;
  tokenizer: TextTokenizer;
  /** Recorded as `base_model_name_or_path`. */
  name?: string;
}

export interface FineTuneOptions {
  /** A Hugging Face model directory, or a model already loaded (in `lora` mode) with its tokenizer. */
  model: string | LoadedModel;
  /** Training JSONL (file content). */
  trainJsonl: string | Uint8Array;
  validationJsonl?: string | Uint8Array | null;
  /**
   * Everything that decides what is trained, resolved (libs/data `resolveFineTuneSpec`): the
   * seed, epochs and batch size, the LoRA settings (`target_modules` omitted = the
   * architecture's PEFT targets), the optimiser and schedule, `training.max_seq_length` (the
   * longest tokenized example kept, tail cut) and `training.gradient_checkpointing`
   * (recompute each block's activations in backward, Chen et al. 2016).
   */
  spec: FineTuneSpec;
  /**
   * Refuse the run before loading weights when the pre-flight memory estimate exceeds this
   * many MiB (`MemoryLimitError`). Null or absent: no check (callers pass
   * `memoryLimitMbFromEnv()`).
   */
  memoryLimitMb?: number | null;
  earlyStopping?: EarlyStoppingOptions;
  /** Cap periodic validation at the first N validation examples (the final pass uses all). */
  evalMaxExamples?: number;
  checkpoint?: CheckpointOptions;
  /** A blob from an earlier attempt's checkpoint sink: training continues from it. */
  resumeFrom?: Uint8Array | null;
  signal?: AbortSignal;
  onPreflight?: (preflight: FineTunePreflight) => void | Promise<void>;
  onProgress?: (progress: TrainingProgress) => void | Promise<void>;
  onEval?: (report: EvalReport) => void | Promise<void>;
  /** Sample generations on the first validation prompts; `false` to skip. Default 3 × 32 tokens. */
  samples?: { count?: number; maxNewTokens?: number } | false;
  /** Adapter name on the model. Default `default` (PEFT's). */
  adapterName?: string;
  /** With a caller-loaded model: leave the trained adapter on it. Default false (deleted). */
  keepAdapter?: boolean;
  /** Extra lineage recorded in checkpoints and the result (not part of the config hash). */
  lineage?: Record<string, string | null>;
}

export interface FineTunePreflight extends PreflightSummary {
  /** Steps this run will take: min(stepsPerEpoch × epochs, maxSteps). */
  totalSteps: number;
  /** Pre-flight memory estimate of the whole process (MiB) and its parts. */
  memoryEstimateMb: number;
  memoryEstimate: MemoryEstimate;
  /** The limit the estimate was checked against (MiB), or null when unchecked. */
  memoryLimitMb: number | null;
  gradientCheckpointing: boolean;
  validationExamples: number;
  /** Steps already done when resuming, else 0. */
  resumeStep: number;
}

/** What lora-core knows of a run's lineage; callers add theirs (contracts `Lineage`). */
export type FineTuneLineage = Pick<
  Lineage,
  | 'base_model'
  | 'base_model_sha256'
  | 'training_file_sha256'
  | 'validation_file_sha256'
  | 'config_sha256'
  | 'spec'
  | 'tfjs_version'
  | 'backend'
  | 'resumed_from_step'
>;

export interface FineTuneResult {
  /** `adapter_config.json` object and `adapter_model.safetensors` bytes (PEFT layout). */
  adapter: ExportedPeftAdapter;
  stopReason: StopReason;
  steps: number;
  totalSteps: number;
  epochs: number;
  /** Real tokens read over the run (OpenAI `trained_tokens`). */
  trainedTokens: number;
  trainedTargetTokens: number;
  finalTrainLoss: number;
  /** Final pass over the whole validation set (after restoring the best adapter, if any). */
  validation: EvalMetrics | null;
  bestStep: number | null;
  bestValidLoss: number | null;
  restoredBest: boolean;
  samples: SampleGeneration[];
  metrics: StepMetrics[];
  /** OpenAI `result_files`-style CSV of the step metrics. */
  metricsCsv: string;
  preflight: FineTunePreflight;
  resumedFromStep: number | null;
  trainableParameters: number;
  optimizerStateBytes: number;
  lineage: FineTuneLineage;
}

/**
 * Every example lost its completion to truncation (or had none): training would print loss
 * 0 and write an adapter that learned nothing, so the run is refused before it starts.
 */
export class NoTrainableTokensError extends TrainingConfigError {
  override readonly name: string = 'NoTrainableTokensError';
  constructor(
    readonly examples: number,
    readonly examplesWithoutTargets: number,
    readonly maxSeqLength: number,
    readonly longestExampleTokens: number,
  ) {
    super(
      `no example has a completion token left to train on at max_seq_length ${maxSeqLength}: ` +
        `${examplesWithoutTargets} of ${examples} examples lose every target token to truncation ` +
        `(the longest example has ${longestExampleTokens} tokens). Raise max_seq_length or shorten the prompts.`,
      'training.max_seq_length',
    );
  }
}

/** Share of examples losing completion tokens to truncation above which a warning is raised. */
export const TRUNCATION_WARNING_SHARE = 0.2;

const sha256 = (data: string | Uint8Array) => createHash('sha256').update(data).digest('hex');

function decodeJsonl(content: string | Uint8Array): string {
  return typeof content === 'string'
    ? content
    : new TextDecoder('utf-8', { fatal: true }).decode(content);
}

/**
 * The spec's LoRA section as the model's adapter config (PEFT's field names in the layer's
 * camelCase); omitted `target_modules` are the architecture's PEFT defaults.
 */
export function loraConfigOf(
  lora: LoraConfigDto,
  config: Pick<ModelConfig, 'modelType'>,
): LoraConfig {
  return {
    r: lora.r,
    alpha: lora.alpha,
    dropout: lora.dropout,
    targetModules: lora.target_modules ?? defaultTargetModules(config.modelType),
    useRslora: lora.use_rslora,
  };
}

export async function runFineTune(options: FineTuneOptions): Promise<FineTuneResult> {
  const owned = typeof options.model === 'string';
  // Tokenizer and config first: both are cheap, and the data and memory checks below refuse a
  // run before any weight is allocated.
  const tokenizer =
    typeof options.model === 'string'
      ? await loadTokenizer(options.model)
      : options.model.tokenizer;
  const config: ModelConfig =
    typeof options.model === 'string'
      ? await readModelConfig(options.model)
      : options.model.model.config;

  const trainText = decodeJsonl(options.trainJsonl);
  const validationText =
    options.validationJsonl === undefined || options.validationJsonl === null
      ? null
      : decodeJsonl(options.validationJsonl);
  const spec = checkFineTuneSpec(options.spec);
  const dpo = spec.method.type === 'dpo';
  // A DPO run reads preference pairs (OpenAI's DPO JSONL); a file of the other kind is a
  // DatasetValidationError naming it, never a silent run of the wrong method.
  const trainPairs: PreferenceExample[] = dpo ? parsePreferenceJsonl(trainText) : [];
  const validationPairs: PreferenceExample[] =
    dpo && validationText !== null ? parsePreferenceJsonl(validationText) : [];
  const trainExamples: TrainingExample[] = dpo ? [] : parseJsonlExamples(trainText);
  // Supervised validation examples; for DPO, the validation pairs' preferred chats, which the
  // sample generations prompt with.
  const validationExamples: TrainingExample[] = dpo
    ? validationPairs.map((pair) => preferenceChats(pair).chosen)
    : validationText === null
      ? []
      : parseJsonlExamples(validationText);
  const maxSeqLength = spec.training.max_seq_length;
  // The resolver held it to the same context length (libs/data facts); a hand-made spec
  // or a changed model is refused here.
  const context = contextLength(config);
  if (maxSeqLength > context) {
    throw new TrainingConfigError(
      `training.max_seq_length ${maxSeqLength} exceeds the model's context length ${context}`,
      'training.max_seq_length',
    );
  }
  const preflightOptions = {
    maxSeqLength,
    batchSize: spec.hyperparameters.batch_size,
    epochs: spec.hyperparameters.n_epochs,
    gradientAccumulationSteps: spec.training.gradient_accumulation_steps,
  };
  const summary = dpo
    ? preferencePreflightSummary(trainPairs, tokenizer, preflightOptions)
    : preflightSummary(trainExamples, tokenizer, preflightOptions);
  if (summary.trainableTokens === 0) {
    throw new NoTrainableTokensError(
      summary.examples,
      summary.examplesWithoutTrainableTokens,
      maxSeqLength,
      summary.longestExampleTokens,
    );
  }
  const loraConfig = loraConfigOf(spec.lora, config);
  const gradientCheckpointing = spec.training.gradient_checkpointing;
  // libs/data builds it, so the API's job estimate (issue 20) sizes the same run the same way
  // (a DPO micro-batch holds both sides of each pair: twice the rows).
  const memoryInput: MemoryEstimateInput = trainingMemoryInput(spec, summary, config);
  const memoryEstimate = estimateTrainingMemory(memoryInput);
  const memoryEstimateMb = Math.ceil(memoryEstimate.totalBytes / (1024 * 1024));
  const memoryLimitMb = options.memoryLimitMb ?? null;
  if (memoryLimitMb !== null && memoryEstimateMb > memoryLimitMb) {
    throw new MemoryLimitError(
      memoryEstimateMb,
      memoryLimitMb,
      memoryAdvice(memoryInput, memoryLimitMb),
    );
  }
  if (tf.getBackend() === 'webgpu') {
    await initWebgpuBackend();
    checkWebgpuFits(memoryInput, memoryEstimate, {
      bindingLimitBytes: deviceBindingLimitBytes()!,
      memoryLimitMb: gpuMemoryLimitMbFromEnv(),
    });
  }
  if (tf.getBackend() === 'wasm') {
    const heap = wasmHeapBytes(memoryEstimate, hostWeightKernelsActive());
    if (heap > WASM_HEAP_BUDGET_BYTES) {
      throw new WasmHeapLimitError(Math.ceil(heap / (1024 * 1024)), memoryAdvice(memoryInput));
    }
  }

  let loaded: LoadedModel;
  if (typeof options.model === 'string') {
    loaded = {
      model: await loadCausalLM(options.model),
      tokenizer,
      name: basename(options.model),
    };
  } else {
    loaded = options.model;
  }
  const { model } = loaded;
  const adapterName = options.adapterName ?? 'default';
  let trainer: Trainer | null = null;
  let adapterAdded = false;
  try {
    if (model.mode !== 'lora')
      throw new TrainingConfigError('runFineTune needs a model in "lora" mode', 'model');
    model.gradientCheckpointing = gradientCheckpointing;
    // Seeded init: the same seed gives the same A matrices (and so the same run).
    model.addAdapter(adapterName, loraConfig, spec.seed);
    adapterAdded = true;
    model.setActiveAdapter(adapterName);

    const tokenize = (examples: TrainingExample[]) =>
      examples.map((example) => tokenizeExample(example, tokenizer, { maxSeqLength }));
    const tokenizePairs = (pairs: PreferenceExample[]): TokenizedPair[] =>
      pairs.map((pair) => tokenizePreferencePair(pair, tokenizer, { maxSeqLength }));
    trainer = new Trainer({
      model,
      ...(dpo
        ? {
            pairs: { train: tokenizePairs(trainPairs), validation: tokenizePairs(validationPairs) },
          }
        : { train: tokenize(trainExamples), validation: tokenize(validationExamples) }),
      padTokenId: tokenizer.padTokenId,
      spec,
      earlyStopping: options.earlyStopping,
      evalMaxExamples: options.evalMaxExamples,
      checkpoint: options.checkpoint,
      onProgress: options.onProgress,
      onEval: options.onEval,
      signal: options.signal,
      lineage: {
        trainFileSha256: sha256(trainText),
        validationFileSha256: validationText === null ? null : sha256(validationText),
        ...(options.lineage ?? {}),
      },
    });

    let resumedFromStep: number | null = null;
    if (options.resumeFrom) resumedFromStep = trainer.restore(options.resumeFrom).step;

    const preflight: FineTunePreflight = {
      ...summary,
      totalSteps: trainer.totalSteps,
      validationExamples: dpo ? validationPairs.length : validationExamples.length,
      resumeStep: resumedFromStep ?? 0,
      memoryEstimateMb,
      memoryEstimate,
      memoryLimitMb,
      gradientCheckpointing,
    };
    await options.onPreflight?.(preflight);

    const run = await trainer.run();
    const validation =
      validationExamples.length > 0 ? await trainer.evaluate(undefined, Infinity) : null;

    const samples: SampleGeneration[] =
      options.samples === false
        ? []
        : await generateSamples(
            model,
            tokenizer,
            validationExamples.slice(0, options.samples?.count ?? 3),
            {
              maxNewTokens: options.samples?.maxNewTokens ?? 32,
              seed: spec.seed,
              adapter: adapterName,
            },
          );

    const baseName = loaded.name ?? 'base';
    // Asynchronous reads: this also runs on webgpu, which has no synchronous one.
    const adapter = await exportPeftAdapterAsync(model, adapterName, baseName);
    const trainableParameters = [...model.namedTrainableVariables().values()].reduce(
      (n, v) => n + v.size,
      0,
    );
    return {
      adapter,
      stopReason: run.stopReason,
      steps: run.steps,
      totalSteps: run.totalSteps,
      epochs: run.epochs,
      trainedTokens: run.trainedTokens,
      trainedTargetTokens: run.trainedTargetTokens,
      finalTrainLoss: run.finalTrainLoss,
      validation,
      bestStep: run.bestStep,
      bestValidLoss: run.bestValidLoss,
      restoredBest: run.restoredBest,
      samples,
      metrics: run.metrics,
      metricsCsv: metricsToCsv(run.metrics, validation),
      preflight,
      resumedFromStep,
      trainableParameters,
      optimizerStateBytes: trainer.optimizerStateBytes,
      lineage: {
        base_model: baseName,
        base_model_sha256: model.baseModelSha256 ?? null,
        training_file_sha256: sha256(trainText),
        validation_file_sha256: validationText === null ? null : sha256(validationText),
        config_sha256: trainer.configSha256,
        spec,
        tfjs_version: tf.version.tfjs,
        backend: tf.getBackend(),
        resumed_from_step: resumedFromStep,
      },
    };
  } finally {
    trainer?.dispose();
    if (owned) model.dispose();
    else if (adapterAdded && !options.keepAdapter) model.deleteAdapter(adapterName);
  }
}
