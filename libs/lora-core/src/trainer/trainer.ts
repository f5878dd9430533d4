/**
 * The training loop, written out by hand because `model.fit` can neither checkpoint an
 * optimizer exactly nor resume mid-epoch (issue 4 item 3).
 *
 * One optimizer step:
 *   1. the step's micro-batches come from the epoch's seeded order (data-order.ts);
 *   2. each micro-batch's loss is Σ token NLL / (targets in the whole accumulation group),
 *      so the accumulated gradient equals the big batch's gradient of the mean token loss;
 *   3. one host read fetches loss, correct tokens and the squared gradient norm together;
 *      a NaN/Inf there stops training before the update (R16);
 *   4. global-norm clipping (torch `clip_grad_norm_`), then AdamW at the scheduled rate.
 *
 * Everything random is derived from the seed and a counter (shuffle: epoch; dropout: step and
 * micro-batch), and every piece of mutable state goes into the checkpoint, so a run resumed
 * from a checkpoint ends with the same adapter bytes as an uninterrupted run on the same
 * backend (R6). What a checkpoint holds, and how it is checked on resume, is
 * trainer-state.ts; the validation pass and early stopping's bookkeeping are evaluation.ts.
 *
 * A DPO spec (`spec.method.type === "dpo"`, issue 20) trains on preference pairs instead of
 * sequences: the data order, micro-batches and accumulation run over pairs, and each
 * micro-batch's loss is Σ pair DPO losses / (pairs of the group) (preference-pass.ts). The
 * rest of the step (the NaN guard, clipping, AdamW, the schedule, checkpoints) is shared.
 */
import * as tf from '@tensorflow/tfjs';

import type { CheckpointState } from '../checkpoint/checkpoint.codec';
import type { CausalLM } from '../models/causal-lm.model';
import { sequenceLimit } from '../models/model.config';
import { yieldToEventLoop } from '../util/event-loop.util';
import { deriveSeed } from '../util/rng.util';
import { AdamW, type AdamWState } from './adamw.optimizer';
import { DataSchedule, epochOrder, hashSequences, type TokenizedSequence } from './data-order';
import { evaluateSequences, noValidationYet, recordValidation } from './evaluation';
import { clipByGlobalNorm, squaredGlobalNorm } from './gradient-clip';
import { learningRateAt } from './lr-schedule';
import { buildMicroBatch, countTargets, disposeMicroBatch } from './micro-batch';
import {
  evaluatePairs,
  hashPairs,
  preferenceForwardBackward,
  rewardMetrics,
  type TokenizedPair,
} from './preference-pass';
import {
  assignParams,
  decodeTrainerState,
  encodeTrainerState,
  readParams,
  readParamsSync,
  runConfigSha256,
  type LoopState,
  type RunIdentity,
} from './trainer-state';
import type { FineTuneSpec } from '@lorafleet/contracts';
import {
  NonFiniteLossError,
  TrainingAbortedError,
  TrainingConfigError,
  type EarlyStoppingOptions,
  type EvalMetrics,
  type EvalReport,
  type StepMetrics,
  type StopReason,
  type TrainerCheckpointEvent,
  type TrainingProgress,
  type DpoRewardMetrics,
  checkFineTuneSpec,
} from './trainer.types';

export interface CheckpointOptions {
  /** Emit a checkpoint every N optimizer steps. */
  everySteps?: number;
  /** Emit a checkpoint when T seconds have passed since the last one (checked after each step). */
  everySeconds?: number;
  /** Receives each checkpoint; awaited before training continues. */
  sink: (checkpoint: TrainerCheckpointEvent) => void | Promise<void>;
  /** Emit a checkpoint when the AbortSignal fires. Default true. */
  onAbort?: boolean;
}

export interface TrainerOptions {
  /** A model whose trainable variables are what to train (an active LoRA adapter, or full mode). */
  model: CausalLM;
  /** Supervised: the tokenized training sequences. */
  train?: readonly TokenizedSequence[];
  validation?: readonly TokenizedSequence[];
  /** DPO (`spec.method.type === "dpo"`): the tokenized preference pairs, instead of `train`. */
  pairs?: { train: readonly TokenizedPair[]; validation?: readonly TokenizedPair[] };
  /** Id written into padding positions (never attended, never scored). */
  padTokenId: number;
  /** What to train with (`seed`, `hyperparameters` and `training`; the adapter is already on the model). */
  spec: FineTuneSpec;
  /** Shuffle each epoch (seeded). Default true. */
  shuffle?: boolean;
  /** Evaluate every N steps on at most this many validation examples (the first ones). */
  evalMaxExamples?: number;
  /** Micro-batch size for evaluation. Default: the training batch size. */
  evalBatchSize?: number;
  earlyStopping?: EarlyStoppingOptions;
  checkpoint?: CheckpointOptions;
  onProgress?: (progress: TrainingProgress) => void | Promise<void>;
  onEval?: (report: EvalReport) => void | Promise<void>;
  /** Checked before every step. On abort: checkpoint (if a sink exists), then `TrainingAbortedError`. */
  signal?: AbortSignal;
  /** Recorded in checkpoints (not hashed): e.g. data file hashes, versions, backend. */
  lineage?: Record<string, string | null>;
}

export interface TrainRunResult {
  stopReason: StopReason;
  /** Optimizer steps completed (including steps before a resume). */
  steps: number;
  totalSteps: number;
  /** Fractional epochs completed. */
  epochs: number;
  /** Target tokens scored over the whole run. */
  trainedTargetTokens: number;
  /** Real tokens read over the whole run (OpenAI `trained_tokens`). */
  trainedTokens: number;
  finalTrainLoss: number;
  bestStep: number | null;
  bestValidLoss: number | null;
  /** True when the best evaluated parameters were loaded back at the end. */
  restoredBest: boolean;
  metrics: StepMetrics[];
}

export class Trainer {
  readonly spec: FineTuneSpec;
  readonly totalSteps: number;
  readonly stepsPerEpoch: number;
  readonly configSha256: string;
  readonly trainSha256: string;
  readonly validationSha256: string | null;

  private readonly model: CausalLM;
  private readonly train: readonly TokenizedSequence[];
  private readonly validation: readonly TokenizedSequence[];
  private readonly trainPairs: readonly TokenizedPair[];
  private readonly validationPairs: readonly TokenizedPair[];
  /** β when the spec's method is DPO, else null (supervised). */
  private readonly dpoBeta: number | null;
  /** Training examples (supervised) or pairs (DPO): what the data order permutes. */
  private readonly exampleCount: number;
  private readonly variables: Map<string, tf.Variable>;
  /** tfjs variable name → our stable name (variableGrads keys gradients by the former). */
  private readonly stableNames = new Map<string, string>();
  private readonly optimizer: AdamW;
  private readonly schedule: DataSchedule;
  private readonly config: Record<string, unknown>;
  private readonly shuffle: boolean;

  private stepCount = 0;
  private epochIndex = 0;
  private order: number[];
  private cursor = 0;
  private history: StepMetrics[] = [];
  private targetTokens = 0;
  private tokens = 0;
  private best = noValidationYet();
  private lastCheckpoint: { step: number; blob: Uint8Array } | null = null;
  private stopRequested = false;
  private disposed = false;

  constructor(private readonly options: TrainerOptions) {
    this.model = options.model;
    this.spec = checkFineTuneSpec(options.spec);
    const { hyperparameters, training, seed, method } = this.spec;
    this.dpoBeta = method.type === 'dpo' ? method.beta : null;
    if (this.dpoBeta === null && options.pairs) {
      throw new TrainingConfigError(
        'preference pairs train only with method.type "dpo"',
        'method.type',
      );
    }
    if (this.dpoBeta !== null && (options.train?.length ?? 0) > 0) {
      throw new TrainingConfigError(
        'a DPO run trains on preference pairs (options.pairs), not on sequences',
        'method.type',
      );
    }
    this.train = options.train ?? [];
    this.validation = options.validation ?? [];
    this.trainPairs = options.pairs?.train ?? [];
    this.validationPairs = options.pairs?.validation ?? [];
    this.exampleCount = this.dpoBeta === null ? this.train.length : this.trainPairs.length;
    this.shuffle = options.shuffle ?? true;
    if (this.exampleCount === 0)
      throw new TrainingConfigError('the training set is empty', 'train');
    const maxLength = sequenceLimit(this.model.config);
    const sides = (pairs: readonly TokenizedPair[]) =>
      pairs.flatMap((pair) => [pair.chosen, pair.rejected]);
    for (const [name, set] of [
      ['train', this.train],
      ['validation', this.validation],
      ['train pair side', sides(this.trainPairs)],
      ['validation pair side', sides(this.validationPairs)],
    ] as const) {
      set.forEach((sequence, index) => {
        if (sequence.inputIds.length === 0 || sequence.inputIds.length > maxLength) {
          throw new TrainingConfigError(
            `${name} example ${index + 1} has ${sequence.inputIds.length} tokens (allowed 1..${maxLength}); ` +
              'lower max_seq_length',
            name,
          );
        }
      });
    }
    if (options.earlyStopping) {
      if (this.validationCount === 0 || training.eval_every_steps === undefined) {
        throw new TrainingConfigError(
          'early stopping needs validation data and training.eval_every_steps',
          'earlyStopping',
        );
      }
      if (
        !Number.isSafeInteger(options.earlyStopping.patience) ||
        options.earlyStopping.patience < 1
      ) {
        throw new TrainingConfigError(
          'earlyStopping.patience must be a positive integer',
          'earlyStopping',
        );
      }
    }
    this.variables = this.model.namedTrainableVariables();
    if (this.variables.size === 0) {
      throw new TrainingConfigError(
        'the model has no trainable variables; add a LoRA adapter first',
        'model',
      );
    }
    for (const [name, variable] of this.variables) this.stableNames.set(variable.name, name);

    this.schedule = new DataSchedule(
      this.exampleCount,
      hyperparameters.batch_size,
      training.gradient_accumulation_steps,
    );
    this.stepsPerEpoch = this.schedule.stepsPerEpoch;
    this.totalSteps = Math.min(
      this.stepsPerEpoch * hyperparameters.n_epochs,
      training.max_steps ?? Number.MAX_SAFE_INTEGER,
    );
    this.order = epochOrder(seed, 0, this.exampleCount, this.shuffle);
    // β1, β2 and ε stay torch's defaults: no request or flag sets them.
    this.optimizer = new AdamW(this.variables, { weightDecay: training.weight_decay });

    if (this.dpoBeta === null) {
      this.trainSha256 = hashSequences(this.train);
      this.validationSha256 = this.validation.length > 0 ? hashSequences(this.validation) : null;
    } else {
      this.trainSha256 = hashPairs(this.trainPairs);
      this.validationSha256 =
        this.validationPairs.length > 0 ? hashPairs(this.validationPairs) : null;
    }
    const adapter = this.model.mode === 'lora' ? this.model.activeAdapter : null;
    // Only what shapes the trajectory goes into the hash: evaluation settings matter only
    // when early stopping acts on them; the LoRA settings are the adapter's, below.
    this.config = {
      // DPO only: a supervised run's hash stays what it was before methods existed, so its
      // older checkpoints still resume exactly. β shapes the trajectory, so it is hashed.
      ...(this.dpoBeta === null ? {} : { method: { type: 'dpo', beta: this.dpoBeta } }),
      seed,
      hyperparameters: {
        n_epochs: hyperparameters.n_epochs,
        batch_size: hyperparameters.batch_size,
      },
      training: {
        learning_rate: training.learning_rate,
        lr_scheduler: training.lr_scheduler,
        warmup_steps: training.warmup_steps,
        weight_decay: training.weight_decay,
        gradient_accumulation_steps: training.gradient_accumulation_steps,
        max_grad_norm: training.max_grad_norm,
        max_steps: training.max_steps ?? null,
      },
      optimizer: { ...this.optimizer.options },
      shuffle: this.shuffle,
      earlyStopping: options.earlyStopping
        ? {
            ...options.earlyStopping,
            evalEverySteps: training.eval_every_steps,
            evalMaxExamples: options.evalMaxExamples ?? null,
          }
        : null,
      mode: this.model.mode,
      adapter: adapter === null ? null : { name: adapter, ...this.model.loraConfig(adapter) },
      model: this.model.config.raw,
      baseModelSha256: this.model.baseModelSha256 ?? null,
    };
    this.configSha256 = runConfigSha256(this.config);
  }

  /** Validation examples (supervised) or pairs (DPO). */
  private get validationCount(): number {
    return this.dpoBeta === null ? this.validation.length : this.validationPairs.length;
  }

  /** Optimizer steps completed. */
  get step(): number {
    return this.stepCount;
  }

  get epoch(): number {
    return this.stepCount / this.stepsPerEpoch;
  }

  get metrics(): readonly StepMetrics[] {
    return this.history;
  }

  get optimizerStateBytes(): number {
    return this.optimizer.stateBytes();
  }

  /** Makes `run()` return after the current step, as if training had completed. */
  requestStop(): void {
    this.stopRequested = true;
  }

  /**
   * One optimizer step. Throws `NonFiniteLossError` (without updating anything) when the loss
   * or the gradient norm is NaN/Inf.
   */
  async trainStep(): Promise<StepMetrics> {
    this.assertUsable();
    if (this.stepCount >= this.totalSteps) {
      throw new Error(`training is complete (${this.totalSteps} steps)`);
    }
    const { training, seed } = this.spec;
    const started = performance.now();
    const stepNumber = this.stepCount + 1;
    const plan = this.schedule.plan(this.order, this.cursor);
    const learningRate = learningRateAt(stepNumber, { ...training, totalSteps: this.totalSteps });
    const pass = await this.forwardBackward(plan.microBatches, stepNumber);
    const { groupTargets, tokens } = pass;
    try {
      const gradients = pass.grads;
      // One host read per step: loss, correct tokens and Σ‖g‖² together.
      const packed = tf.tidy(() =>
        tf.stack([pass.lossSum, pass.correctSum, squaredGlobalNorm(gradients)]),
      ); // [3]
      const [loss, correctCount, squaredNorm] = await packed.data();
      packed.dispose();
      const gradNorm = Math.sqrt(squaredNorm);
      if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
        throw new NonFiniteLossError(
          stepNumber,
          loss,
          gradNorm,
          this.lastCheckpoint?.step ?? null,
          this.lastCheckpoint?.blob ?? null,
        );
      }
      clipByGlobalNorm(gradients, training.max_grad_norm, gradNorm);
      this.optimizer.step(gradients, learningRate);

      this.stepCount = stepNumber;
      this.cursor = plan.nextCursor;
      if (this.cursor >= this.order.length) {
        this.epochIndex += 1;
        this.order = epochOrder(seed, this.epochIndex, this.exampleCount, this.shuffle);
        this.cursor = 0;
      }
      this.targetTokens += groupTargets;
      this.tokens += tokens;
      const seconds = (performance.now() - started) / 1000;
      const metrics: StepMetrics = {
        step: stepNumber,
        epoch: stepNumber / this.stepsPerEpoch,
        trainLoss: loss,
        ...(pass.dpo
          ? { dpo: pass.dpo }
          : { trainMeanTokenAccuracy: groupTargets > 0 ? correctCount / groupTargets : 0 }),
        learningRate,
        gradNorm,
        targetTokens: groupTargets,
        tokens,
        tokensPerSecond: seconds > 0 ? tokens / seconds : 0,
      };
      this.history.push(metrics);
      return metrics;
    } finally {
      disposePass(pass);
    }
  }

  /**
   * The accumulated gradient of the mean token loss over `microBatches` (lists of training
   * example indices), as host arrays by parameter name, without updating anything. The
   * training step uses the same code; tests use it to check accumulation and masking.
   */
  async computeGradients(
    microBatches: number[][],
  ): Promise<{ loss: number; gradients: Map<string, Float32Array> }> {
    this.assertUsable();
    const pass = await this.forwardBackward(microBatches, this.stepCount + 1);
    try {
      const gradients = new Map<string, Float32Array>();
      for (const [name, g] of pass.grads) gradients.set(name, new Float32Array(await g.data()));
      return { loss: (await pass.lossSum.data())[0], gradients };
    } finally {
      disposePass(pass);
    }
  }

  /**
   * Mean token loss and accuracy over `examples` (default: the validation set, capped at
   * `evalMaxExamples` when `maxExamples` is not given). No dropout, no state change. A DPO run
   * evaluates its validation pairs instead: mean DPO loss and reward metrics.
   */
  async evaluate(
    examples: readonly TokenizedSequence[] = this.validation,
    maxExamples: number | undefined = this.options.evalMaxExamples,
  ): Promise<EvalMetrics> {
    this.assertUsable();
    const batchSize = this.options.evalBatchSize ?? this.spec.hyperparameters.batch_size;
    if (this.dpoBeta !== null) {
      return evaluatePairs(this.model, this.validationPairs, {
        beta: this.dpoBeta,
        padTokenId: this.options.padTokenId,
        batchSize,
        maxExamples,
      });
    }
    return evaluateSequences(this.model, examples, {
      padTokenId: this.options.padTokenId,
      batchSize,
      maxExamples,
    });
  }

  /** Runs to the end (or early stop), with callbacks, evaluation, checkpoints and abort checks. */
  async run(): Promise<TrainRunResult> {
    this.assertUsable();
    const { hyperparameters, training } = this.spec;
    const attemptStartStep = this.stepCount;
    let attemptSeconds = 0;
    let attemptTokens = 0;
    let lastCheckpointAt = performance.now();
    let stopReason: StopReason =
      this.totalSteps < this.stepsPerEpoch * hyperparameters.n_epochs ? 'max_steps' : 'completed';

    const patience = this.options.earlyStopping?.patience;
    while (this.stepCount < this.totalSteps) {
      if (this.options.signal?.aborted) await this.abort();
      if (this.stopRequested) break;
      // A checkpoint written at the step that triggered early stopping resumes as stopped.
      if (patience !== undefined && this.best.evalsWithoutImprovement >= patience) {
        stopReason = 'early_stopping';
        break;
      }
      const started = performance.now();
      const metrics = await this.trainStep();
      attemptSeconds += (performance.now() - started) / 1000;
      attemptTokens += metrics.tokens;

      let stop = false;
      if (
        training.eval_every_steps !== undefined &&
        this.validationCount > 0 &&
        this.stepCount % training.eval_every_steps === 0
      ) {
        stop = await this.evaluateAndTrack(metrics);
      }
      const attemptSteps = this.stepCount - attemptStartStep;
      await this.options.onProgress?.({
        step: this.stepCount,
        totalSteps: this.totalSteps,
        epoch: metrics.epoch,
        totalEpochs: this.totalSteps / this.stepsPerEpoch,
        loss: metrics.trainLoss,
        ...(metrics.dpo
          ? { dpo: metrics.dpo }
          : { meanTokenAccuracy: metrics.trainMeanTokenAccuracy }),
        learningRate: metrics.learningRate,
        gradNorm: metrics.gradNorm,
        tokensPerSecond: attemptSeconds > 0 ? attemptTokens / attemptSeconds : 0,
        etaSeconds: (attemptSeconds / attemptSteps) * (this.totalSteps - this.stepCount),
        elapsedSeconds: attemptSeconds,
      });

      const sink = this.options.checkpoint;
      if (sink) {
        const everySteps = sink.everySteps ?? 0;
        const everySeconds = sink.everySeconds ?? 0;
        const due =
          (everySteps > 0 && this.stepCount % everySteps === 0) ||
          (everySeconds > 0 && performance.now() - lastCheckpointAt >= everySeconds * 1000);
        if (due) {
          await this.emitCheckpoint('interval', metrics);
          lastCheckpointAt = performance.now();
        }
      }
      if (stop) {
        stopReason = 'early_stopping';
        break;
      }
      // Let the parent's IPC, timers and abort handlers run between steps.
      await yieldToEventLoop();
    }

    // The last update can overflow without a later step to notice: never return Inf weights.
    await this.assertFiniteParams(this.history[this.history.length - 1]);
    let restoredBest = false;
    if (
      this.options.earlyStopping &&
      this.options.earlyStopping.restoreBest !== false &&
      this.best.params
    ) {
      assignParams(this.variables, this.best.params);
      restoredBest = true;
    }
    const last = this.history[this.history.length - 1];
    return {
      stopReason,
      steps: this.stepCount,
      totalSteps: this.totalSteps,
      epochs: this.epoch,
      trainedTargetTokens: this.targetTokens,
      trainedTokens: this.tokens,
      finalTrainLoss: last?.trainLoss ?? Number.NaN,
      bestStep: this.best.step,
      bestValidLoss: this.best.validLoss,
      restoredBest,
      metrics: this.history,
    };
  }

  /**
   * Encodes the complete training state as one blob (trainer-state.ts). Reads tensors
   * synchronously, so not on webgpu; the trainer itself uses `checkpointAsync()`.
   */
  checkpoint(): Uint8Array {
    this.assertUsable();
    return this.encodeState(readParamsSync(this.variables), this.optimizer.getState());
  }

  /** `checkpoint()` with asynchronous reads: works on every backend, webgpu included. */
  async checkpointAsync(): Promise<Uint8Array> {
    this.assertUsable();
    return this.encodeState(await readParams(this.variables), await this.optimizer.getStateAsync());
  }

  /**
   * Restores the state saved by `checkpoint()`. The run configuration and the training data
   * must hash the same (`CheckpointError` otherwise, naming what differs).
   */
  restore(blob: Uint8Array): CheckpointState {
    this.assertUsable();
    const restored = decodeTrainerState(blob, this.identity());
    assignParams(this.variables, restored.params);
    this.optimizer.setState(restored.optimizer);
    const { loop } = restored;
    this.stepCount = loop.step;
    this.epochIndex = loop.epochIndex;
    this.order = loop.order;
    this.cursor = loop.cursor;
    this.history = loop.history;
    this.targetTokens = loop.targetTokens;
    this.tokens = loop.tokens;
    this.best = loop.best;
    this.lastCheckpoint = { step: loop.step, blob };
    return restored.state;
  }

  dispose(): void {
    if (this.disposed) return;
    this.optimizer.dispose();
    this.disposed = true;
  }

  // ---- internals -----------------------------------------------------------------------

  private assertUsable(): void {
    if (this.disposed) throw new Error('this Trainer has been disposed');
  }

  /**
   * Forward and backward over one step's micro-batches. Each micro-batch contributes
   * Σ token NLL / (targets of the whole group), so the sum over micro-batches is the mean
   * token loss of the group and the summed gradients are the big batch's gradient.
   */
  private async forwardBackward(
    microBatches: number[][],
    stepNumber: number,
  ): Promise<ForwardBackwardPass> {
    if (this.dpoBeta !== null) return this.preferencePass(microBatches, stepNumber, this.dpoBeta);
    const seed = this.spec.seed;
    const groupTargets = microBatches.reduce((n, mb) => n + countTargets(this.train, mb), 0);
    const divisor = Math.max(groupTargets, 1);
    const varList = [...this.variables.values()];
    const vocab = this.model.config.vocabSize;
    let grads: Map<string, tf.Tensor> | null = null;
    let lossSum: tf.Scalar | null = null;
    let correctSum: tf.Scalar | null = null;
    let tokens = 0;
    try {
      for (let k = 0; k < microBatches.length; k++) {
        const batch = buildMicroBatch(this.train, microBatches[k], this.options.padTokenId, vocab);
        tokens += batch.tokens;
        const kept: { correct?: tf.Scalar } = {};
        try {
          const dropoutSeed = deriveSeed(seed, `dropout:${stepNumber}:${k}`);
          const { value, grads: micro } = tf.variableGrads(() => {
            // The fused head: no [B·T, V] logits (models/head-loss.ts).
            const { nll, correct } = this.model.forwardLoss(
              batch.inputIds,
              batch.attentionMask ?? undefined,
              batch.shifted,
              { training: true, dropoutSeed },
            ); // [], []
            // Kept past variableGrads' scope; disposed once added up.
            kept.correct = tf.keep(correct); // []
            return tf.div<tf.Scalar>(nll, divisor); // []
          }, varList);
          lossSum = accumulate(lossSum, value);
          correctSum = accumulate(correctSum, kept.correct!);
          grads = accumulateGrads(grads, micro, this.stableNames);
        } finally {
          disposeMicroBatch(batch);
        }
      }
    } catch (error) {
      lossSum?.dispose();
      correctSum?.dispose();
      if (grads) for (const g of grads.values()) g.dispose();
      throw error;
    }
    if (!grads || !lossSum || !correctSum)
      throw new Error('a training step needs at least one micro-batch');
    return { grads, lossSum, correctSum, tokens, groupTargets, dpo: null };
  }

  /** The DPO counterpart of the supervised pass: micro-batches of pairs (preference-pass.ts). */
  private async preferencePass(
    microBatches: number[][],
    stepNumber: number,
    beta: number,
  ): Promise<ForwardBackwardPass> {
    const pass = await preferenceForwardBackward(this.model, this.trainPairs, microBatches, {
      beta,
      padTokenId: this.options.padTokenId,
      seed: this.spec.seed,
      stepNumber,
      variables: [...this.variables.values()],
    });
    const grads = new Map<string, tf.Tensor>();
    for (const [variableName, grad] of pass.grads)
      grads.set(this.stableNames.get(variableName)!, grad);
    return {
      grads,
      lossSum: pass.lossSum,
      // DPO scores whole completions: no token accuracy (the packed read needs a value).
      correctSum: tf.scalar(0),
      tokens: pass.tokens,
      groupTargets: pass.targets,
      dpo: rewardMetrics(pass.metrics),
    };
  }

  /** What a checkpoint must agree with to belong to this run. */
  private identity(): RunIdentity {
    return {
      config: this.config,
      configSha256: this.configSha256,
      trainSha256: this.trainSha256,
      validationSha256: this.validationSha256,
      trainExamples: this.exampleCount,
      totalSteps: this.totalSteps,
      stepsPerEpoch: this.stepsPerEpoch,
      seed: this.spec.seed,
      checkValidation: this.options.earlyStopping !== undefined,
    };
  }

  private encodeState(params: Map<string, Float32Array>, optimizerState: AdamWState): Uint8Array {
    const loop: LoopState = {
      step: this.stepCount,
      epochIndex: this.epochIndex,
      order: this.order,
      cursor: this.cursor,
      history: this.history,
      targetTokens: this.targetTokens,
      tokens: this.tokens,
      best: this.best,
    };
    const shapes = new Map<string, number[]>();
    for (const [name, variable] of this.variables) shapes.set(name, variable.shape);
    const adapter = this.model.mode === 'lora' ? this.model.activeAdapter : null;
    return encodeTrainerState({
      identity: this.identity(),
      loop,
      params,
      shapes,
      optimizer: optimizerState,
      optimizerOptions: this.optimizer.options,
      adapter:
        adapter === null
          ? null
          : { name: adapter, loraConfig: { ...this.model.loraConfig(adapter) } },
      lineage: {
        baseModelSha256: this.model.baseModelSha256 ?? null,
        tfjsVersion: tf.version.tfjs,
        backend: tf.getBackend(),
        ...(this.options.lineage ?? {}),
      },
    });
  }

  /** Validation pass on step metrics; updates the best state. Returns true to stop early. */
  private async evaluateAndTrack(metrics: StepMetrics): Promise<boolean> {
    const result = await this.evaluate();
    metrics.validLoss = result.loss;
    if (result.meanTokenAccuracy !== undefined)
      metrics.validMeanTokenAccuracy = result.meanTokenAccuracy;
    if (result.dpo) metrics.validDpo = result.dpo;
    const early = this.options.earlyStopping;
    const isBest = recordValidation(this.best, result.loss, this.stepCount, early?.minDelta ?? 0);
    // Only early stopping needs the weights; snapshots cost a host copy of the adapter.
    if (isBest && early) this.best.params = await readParams(this.variables);
    await this.options.onEval?.({ ...result, step: this.stepCount, isBest });
    return early !== undefined && this.best.evalsWithoutImprovement >= early.patience;
  }

  /** Throws `NonFiniteLossError` when any trainable value is NaN/Inf (e.g. an overflowing update). */
  private async assertFiniteParams(metrics?: StepMetrics): Promise<void> {
    const nonFinite = tf.tidy(() =>
      tf.addN(
        [...this.variables.values()].map((v) =>
          tf.sum(tf.cast(tf.logicalNot(tf.isFinite(v)), 'float32')),
        ),
      ),
    ); // []
    const bad = (await nonFinite.data())[0];
    nonFinite.dispose();
    if (bad > 0) {
      throw new NonFiniteLossError(
        this.stepCount,
        metrics?.trainLoss ?? Number.NaN,
        metrics?.gradNorm ?? Number.NaN,
        this.lastCheckpoint?.step ?? null,
        this.lastCheckpoint?.blob ?? null,
      );
    }
  }

  private async emitCheckpoint(
    reason: TrainerCheckpointEvent['reason'],
    metrics?: StepMetrics,
  ): Promise<Uint8Array> {
    const sink = this.options.checkpoint!;
    // Never hand out a checkpoint with NaN/Inf weights: the last good one must stay the newest.
    await this.assertFiniteParams(metrics);
    const blob = await this.checkpointAsync();
    await sink.sink({ blob, step: this.stepCount, epoch: this.epoch, metrics, reason });
    this.lastCheckpoint = { step: this.stepCount, blob };
    return blob;
  }

  private async abort(): Promise<never> {
    const signal = this.options.signal!;
    let blob: Uint8Array | null = null;
    const sink = this.options.checkpoint;
    if (sink && sink.onAbort !== false) {
      blob =
        this.lastCheckpoint?.step === this.stepCount
          ? this.lastCheckpoint.blob
          : await this.emitCheckpoint('abort', this.history[this.history.length - 1]);
    }
    throw new TrainingAbortedError(this.stepCount, signal.reason, blob);
  }
}

interface ForwardBackwardPass {
  grads: Map<string, tf.Tensor>;
  /** Σ micro-batch losses = the group's mean token loss. */
  lossSum: tf.Scalar;
  correctSum: tf.Scalar;
  /** Real tokens read. */
  tokens: number;
  /** Target tokens scored. */
  groupTargets: number;
  /** DPO steps: the reward metrics of the step's pairs. */
  dpo: DpoRewardMetrics | null;
}

function disposePass(pass: ForwardBackwardPass): void {
  pass.lossSum.dispose();
  pass.correctSum.dispose();
  for (const g of pass.grads.values()) g.dispose();
}

function accumulate(total: tf.Scalar | null, value: tf.Scalar): tf.Scalar {
  if (total === null) return value;
  const sum = tf.add<tf.Scalar>(total, value); // []
  total.dispose();
  value.dispose();
  return sum;
}

function accumulateGrads(
  total: Map<string, tf.Tensor> | null,
  micro: tf.NamedTensorMap,
  stableNames: Map<string, string>,
): Map<string, tf.Tensor> {
  const out = total ?? new Map<string, tf.Tensor>();
  for (const [variableName, grad] of Object.entries(micro)) {
    const name = stableNames.get(variableName)!;
    const previous = out.get(name);
    if (previous) {
      out.set(name, tf.add(previous, grad)); // [param shape]
      previous.dispose();
      grad.dispose();
    } else {
      out.set(name, grad);
    }
  }
  return out;
}
