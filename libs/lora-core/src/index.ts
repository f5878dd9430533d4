// Public API of @lorafleet/lora-core: tfjs causal LMs (GPT-2, Llama), LoRA with PEFT
// semantics, Hugging Face / PEFT / safetensors file formats, parameter counting, backends.
export { SafetensorsError, type SafetensorsErrorCode } from './safetensors/safetensors.error';
export {
  MAX_HEADER_BYTES,
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensors,
  type SafetensorsFile,
  type SafetensorsHeader,
  type SafetensorsInput,
  type SafetensorsTensor,
  type SafetensorsTensorInfo,
} from './safetensors/safetensors.codec';

export {
  contextLength,
  parseModelConfig,
  SUPPORTED_MODEL_TYPES,
  type DecoderConfig,
  type DecoderModelType,
  type Gpt2Activation,
  type Gpt2Config,
  type LlamaConfig,
  type ModelConfig,
  type ModelType,
  type RopeScaling,
} from './models/model.config';
export { ModelConfigError, ModelWeightsError } from './models/model.errors';
export {
  CausalLM,
  buildAttentionBias,
  type AdapterWeightsInit,
  type ForwardOptions,
  type HfParameter,
  type ParameterMode,
  type WeightSource,
} from './models/causal-lm.model';
export {
  LoraLinear,
  type HfWeightLayout,
  type LoraAdapterWeights,
  type RowAdapterDelta,
} from './models/lora-linear.layer';
export { Gpt2Model } from './models/gpt2.model';
export { LlamaModel, ropeInverseFrequencies } from './models/llama.model';
export {
  buildCausalLM,
  createRandomCausalLM,
  hfStateDict,
  loadCausalLM,
  readModelConfig,
  readSafetensorsFileHeader,
  saveHfModel,
  type LoadModelOptions,
  type SaveModelOptions,
} from './models/hf-model.loader';

export {
  LoraConfigError,
  defaultTargetModules,
  loraScaling,
  moduleNameMatches,
  validateLoraConfig,
  type LoraConfig,
} from './lora/lora.config';
export {
  addLoraAdapter,
  deleteAdapter,
  disableAdapters,
  enableAdapters,
  mergeAdapter,
  setActiveAdapter,
  unmergeAdapter,
} from './lora/lora-adapter.ops';
export {
  ADAPTER_CONFIG_FILE,
  ADAPTER_WEIGHTS_FILE,
  PeftAdapterError,
  exportPeftAdapter,
  exportPeftAdapterAsync,
  importPeftAdapter,
  loadPeftAdapter,
  decodePeftAdapter,
  parsePeftAdapterConfig,
  savePeftAdapter,
  type ExportedPeftAdapter,
} from './lora/peft-adapter.io';

export {
  countBaseParameters,
  countLoraTargets,
  countParameters,
  formatTrainableParameters,
  linearModuleSpecs,
  loraTargetSpecs,
  type LinearModuleSpec,
  type LoraTargetCount,
  type ParameterCount,
} from './params/parameter-count.util';

export { causalLmLoss } from './train/causal-lm.loss';
export {
  DEFAULT_DPO_BETA,
  buildDpoRows,
  combineDpoMetrics,
  disposeDpoRows,
  dpoPairTerms,
  dpoStep,
  referenceLogProbs,
  sequenceLogProbs,
  type DpoMetrics,
  type DpoPairTerms,
  type DpoRows,
  type DpoStepOptions,
  type DpoStepResult,
  type PairLogProbs,
} from './train/dpo.loss';
export {
  BACKEND_NAMES,
  BackendError,
  initBackend,
  type BackendName,
} from './backend/backend.registry';
export { SeededRandom, deriveSeed } from './util/rng.util';
export { sha256File, sha256Hex } from './util/hash.util';
export { formatFixedLikePython, formatThousands } from './util/python-format.util';

export { REQUESTED_BACKENDS, type RequestedBackend } from '@lorafleet/contracts';
export { selectBackend } from './backend/select-backend';
export {
  blasKernelsActive,
  blasProductCount,
  setBlasKernels,
  type BlasHostBackend,
} from './backend/blas.kernels';
export { loadOpenBlas, type OpenBlas } from './backend/openblas';
export { wasmFastMatMulCount, wasmFastMatMulEnabled } from './backend/wasm-matmul.kernels';

// ---- issue 4: trainer, checkpoints, generation --------------------------------------------
export {
  Trainer,
  type CheckpointOptions,
  type TrainRunResult,
  type TrainerOptions,
} from './trainer/trainer';
export {
  evaluateSequences,
  generateSamples,
  type EvaluateOptions,
  type SampleGeneration,
  type SampleOptions,
} from './trainer/evaluation';
export {
  runFineTune,
  loraConfigOf,
  NoTrainableTokensError,
  TRUNCATION_WARNING_SHARE,
  type FineTuneLineage,
  type FineTuneOptions,
  type FineTunePreflight,
  type FineTuneResult,
  type LoadedModel,
} from './trainer/fine-tune';
// Pure (no tfjs), so it lives in libs/data beside `preflightSummary` for the API's job estimate;
// re-exported so lora-core's public API keeps it.
export { preferencePreflightSummary } from '@lorafleet/data';
export {
  DeviceBufferLimitError,
  DeviceMemoryLimitError,
  MemoryLimitError,
  WASM_HEAP_BUDGET_BYTES,
  WasmHeapLimitError,
  checkWebgpuFits,
  estimateTrainingMemory,
  gpuMemoryLimitMbFromEnv,
  largestTrainingBuffer,
  wasmHeapBytes,
  webgpuDeviceBytes,
  memoryAdvice,
  memoryLimitMbFromEnv,
  type MemoryEstimate,
  type MemoryEstimateInput,
} from './memory/memory-estimate';
export {
  checkFineTuneSpec,
  NonFiniteLossError,
  TrainingAbortedError,
  TrainingConfigError,
  type EarlyStoppingOptions,
  type DpoRewardMetrics,
  type EvalMetrics,
  type EvalReport,
  type StepMetrics,
  type TokenEvalMetrics,
  type StopReason,
  type TrainerCheckpointEvent,
  type TrainingProgress,
} from './trainer/trainer.types';
export {
  AdamW,
  DEFAULT_ADAMW,
  type AdamWOptions,
  type AdamWState,
} from './trainer/adamw.optimizer';
export {
  LR_SCHEDULERS,
  learningRateAt,
  lrMultiplier,
  type LrScheduleOptions,
  type LrSchedulerType,
} from './trainer/lr-schedule';
export {
  DataSchedule,
  epochOrder,
  hashSequences,
  type TokenizedSequence,
} from './trainer/data-order';
export {
  shiftTargets,
  weightedCorrectCount,
  weightedTokenNllSum,
  type ShiftedTargets,
} from './trainer/token-loss';
export { DPO_METRICS_CSV_COLUMNS, METRICS_CSV_COLUMNS, metricsToCsv } from './trainer/metrics-csv';
export {
  evaluatePairs,
  hashPairs,
  preferenceForwardBackward,
  type TokenizedPair,
} from './trainer/preference-pass';
export {
  CHECKPOINT_FORMAT,
  CHECKPOINT_VERSION,
  CheckpointError,
  decodeCheckpoint,
  encodeCheckpoint,
  readCheckpointState,
  type CheckpointState,
  type CheckpointTensor,
  type TrainerCheckpoint,
} from './checkpoint/checkpoint.codec';
export { KvCacheDecoder } from './generation/kv-cache.decoder';
export {
  generateText,
  generateTokens,
  type GenerateOptions,
  type GenerationResult,
  type TextGenerationResult,
} from './generation/generate';
export {
  argmax,
  sampleToken,
  samplingDistribution,
  type SamplingOptions,
} from './generation/sampling';
export { clipByGlobalNorm, squaredGlobalNorm } from './trainer/gradient-clip';
export {
  checkpointFileName,
  latestCheckpoint,
  listCheckpointFiles,
  pruneCheckpoints,
  writeCheckpointFile,
} from './checkpoint/checkpoint-store';
export {
  requestedBackendFromEnv,
  selectBackendFromEnv,
  type SelectedBackend,
} from './backend/select-backend';
export {
  avoidTransposedMatMul,
  batchedMatMul,
  frozenMatMul,
  matMul2d,
  tiedHeadMatMul,
} from './backend/matmul.ops';
export { measureWebgpuTraffic, type WebgpuTraffic } from './backend/webgpu-traffic';
export {
  crossEntropyGrad,
  crossEntropyRows,
  fusedCrossEntropyActive,
} from './backend/webgpu-cross-entropy.kernels';
export {
  DAWN_BACKENDS,
  WEBGPU_MAX_BINDING_ENV,
  deviceBindingLimitBytes,
  initWebgpuBackend,
  webgpuDeviceErrors,
  type DawnBackend,
  type WebgpuBackendInfo,
  type WebgpuBackendOptions,
} from './backend/webgpu.backend';
export {
  MODEL_SHAPES,
  MODEL_SHAPE_NAMES,
  MODEL_SHAPE_SEQ_LENGTH,
  isModelShapeName,
  modelShape,
  type ModelShape,
  type ModelShapeName,
} from './models/model-shapes';
export {
  writeRandomModelDir,
  type RandomModelDtype,
  type RandomModelOptions,
  type RandomModelSummary,
} from './models/random-model.writer';
export {
  buildSafetensorsHeader,
  type SafetensorsHeaderEntry,
  type SafetensorsLayout,
} from './safetensors/safetensors.codec';

// ---- issue 19: serving (many adapters over one base, batched decoding) ---------------------
export {
  AdapterRegistry,
  AdapterRegistryError,
  type AdapterRegistryErrorCode,
  type AdapterRegistryOptions,
  type AdapterSource,
  type ServingAdapter,
  type ServingAdapterModule,
} from './serving/adapter.registry';
export { RowAdapterBatch, type RowAdapterLayout } from './serving/row-adapter.batch';
export {
  BatchedKvDecoder,
  type BatchedKvDecoderOptions,
  type DecodeRow,
} from './serving/batched-kv.decoder';
export { StopSequenceMatcher } from './serving/stop-sequence.matcher';
export {
  CompletionCancelledError,
  CompletionEngine,
  KvCacheBudgetError,
  MAX_STOP_SEQUENCES,
  kvCacheBytesOf,
  kvCacheBytesPerToken,
  type CompletionDelta,
  type CompletionEngineOptions,
  type CompletionRequest,
  type CompletionResult,
  type CompletionUsage,
  type FinishReason,
} from './serving/completion.engine';
