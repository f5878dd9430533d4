/**
 * Trainer child process: owns tfjs and runs one training attempt from a TrainerSpec with
 * lora-core's `runFineTune`. It checkpoints through the parent (R5), stops cleanly on
 * pause or shutdown (R12), and exits as soon as the IPC channel closes, so it never outlives
 * its worker (R9).
 */
import { DatasetValidationError } from '@lorafleet/data';
import {
  NonFiniteLossError,
  TrainingAbortedError,
  TrainingConfigError,
  runFineTune,
  selectBackend,
  type FineTuneResult,
} from '@lorafleet/lora-core';
import type { JsonObject } from '@lorafleet/db';
import type { ChildToParent, ParentToChild, StopReason, TrainerSpec } from './trainer-protocol';

const LORAFLEET_VERSION = '0.1.0';

/** Resolves once the message is handed to the IPC channel, so exiting after it loses nothing. */
function send(message: ChildToParent): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) resolve();
    else process.send(message, undefined, {}, () => resolve());
  });
}

process.on('disconnect', () => process.exit(1));

/** Input the trainer cannot use; retrying the same job cannot help (R13, R16). */
class BadInputError extends Error {}

const stopController = new AbortController();
let stopReason: StopReason | null = null;

async function run(spec: TrainerSpec): Promise<void> {
  const backend = await selectBackend(spec.backend);
  let lastProgress = 0;
  let result: FineTuneResult;
  try {
    result = await runFineTune({
      model: spec.modelDir,
      trainJsonl: spec.trainingJsonl,
      validationJsonl: spec.validationJsonl,
      lora: {
        r: spec.lora.r,
        alpha: spec.lora.alpha,
        dropout: spec.lora.dropout,
        useRslora: spec.lora.use_rslora,
        ...(spec.lora.target_modules === undefined
          ? {}
          : { targetModules: spec.lora.target_modules }),
      },
      hyperparameters: {
        epochs: spec.hyperparameters.n_epochs,
        batchSize: spec.hyperparameters.batch_size,
        learningRate: spec.learningRate,
        lrScheduler: spec.training.lr_scheduler,
        warmupSteps: spec.training.warmup_steps,
        weightDecay: spec.training.weight_decay,
        gradientAccumulationSteps: spec.training.gradient_accumulation_steps,
        maxSteps: spec.training.max_steps ?? null,
        evalEverySteps: spec.training.eval_every_steps ?? null,
        seed: spec.seed,
      },
      maxSeqLength: spec.training.max_seq_length,
      resumeFrom: spec.resumeFrom,
      signal: stopController.signal,
      checkpoint: {
        everySteps: spec.checkpointEverySteps,
        everySeconds: spec.checkpointEverySeconds,
        onAbort: true,
        sink: (checkpoint) =>
          send({
            kind: 'checkpoint',
            checkpoint: {
              step: checkpoint.step,
              epoch: checkpoint.epoch,
              metrics: checkpoint.metrics
                ? {
                    train_loss: checkpoint.metrics.trainLoss,
                    train_mean_token_accuracy: checkpoint.metrics.trainMeanTokenAccuracy,
                    ...(checkpoint.metrics.validLoss === undefined
                      ? {}
                      : { valid_loss: checkpoint.metrics.validLoss }),
                    ...(checkpoint.metrics.validMeanTokenAccuracy === undefined
                      ? {}
                      : { valid_mean_token_accuracy: checkpoint.metrics.validMeanTokenAccuracy }),
                  }
                : {},
              blob: checkpoint.blob,
            },
          }),
      },
      lineage: { backend, lorafleet_version: LORAFLEET_VERSION, job_id: spec.jobId },
      onPreflight: async (preflight) => {
        await send({
          kind: 'ready',
          backend,
          resumedFromStep: preflight.resumeStep > 0 ? preflight.resumeStep : null,
        });
        await send({
          kind: 'preflight',
          summary: {
            examples: preflight.examples,
            tokens: preflight.tokens,
            trainableTokens: preflight.trainableTokens,
            truncatedExamples: preflight.truncatedExamples,
            totalSteps: preflight.totalSteps,
          },
        });
      },
      onProgress: (progress) => {
        // At most ~4 reports a second, and always the last step.
        const now = Date.now();
        if (now - lastProgress < 250 && progress.step !== progress.totalSteps) return;
        lastProgress = now;
        void send({
          kind: 'progress',
          progress: {
            step: progress.step,
            totalSteps: progress.totalSteps,
            epoch: progress.epoch,
            loss: progress.loss,
            meanTokenAccuracy: progress.meanTokenAccuracy,
            learningRate: progress.learningRate,
            tokensPerSecond: progress.tokensPerSecond,
            etaSeconds: progress.etaSeconds,
          },
        });
      },
      onEval: (report) =>
        send({
          kind: 'eval',
          step: report.step,
          metrics: { valid_loss: report.loss, valid_mean_token_accuracy: report.meanTokenAccuracy },
        }),
    });
  } catch (error) {
    if (error instanceof TrainingAbortedError && stopReason !== null) {
      await send({ kind: 'stopped', reason: stopReason });
      return;
    }
    if (
      error instanceof DatasetValidationError ||
      error instanceof TrainingConfigError ||
      error instanceof NonFiniteLossError
    ) {
      throw new BadInputError(error.message);
    }
    throw error;
  }
  const lineage = result.lineage;
  await send({
    kind: 'result',
    result: {
      // PEFT's config is plain JSON (strings, numbers, booleans, lists).
      adapterConfig: JSON.parse(JSON.stringify(result.adapter.adapterConfig)) as JsonObject,
      adapterSafetensors: result.adapter.adapterSafetensors,
      trainedTokens: result.trainedTokens,
      finalLoss: result.finalTrainLoss,
      steps: result.steps,
      backend,
      metrics: {
        final_train_loss: result.finalTrainLoss,
        ...(result.validation
          ? {
              valid_loss: result.validation.loss,
              valid_mean_token_accuracy: result.validation.meanTokenAccuracy,
            }
          : {}),
      },
      resultCsv: result.metricsCsv,
      samples: result.samples.map((s) => ({
        prompt: s.prompt,
        completion: s.completion,
        reference: s.reference,
      })),
      lineage: {
        base_model: lineage.baseModel,
        // Verified against the job's recorded hash before training (config, weights, tokenizer).
        base_model_hash: spec.baseModelHash,
        // sha256 of the weight bytes as lora-core loaded them.
        base_model_sha256: lineage.baseModelSha256,
        training_file_sha256: lineage.trainSha256,
        validation_file_sha256: lineage.validationSha256,
        config_sha256: lineage.configSha256,
        hyperparameters: { ...lineage.hyperparameters },
        lora: { ...lineage.lora },
        max_seq_length: lineage.maxSeqLength,
        tfjs_version: lineage.tfjsVersion,
        lorafleet_version: LORAFLEET_VERSION,
        resumed_from_step: result.resumedFromStep,
      },
    },
  });
}

/** Boot-time check (R17): can this machine run the configured backend at all? */
async function probe(requested: string): Promise<void> {
  const backend = await selectBackend(requested);
  await send({ kind: 'ready', backend, resumedFromStep: null });
}

process.on('message', (message: ParentToChild) => {
  if (message.kind === 'stop') {
    stopReason ??= message.reason;
    stopController.abort(new Error(`stop requested for ${message.reason}`));
    return;
  }
  const work = message.kind === 'probe' ? probe(message.backend) : run(message.spec);
  work
    .then(() => process.exit(0))
    .catch((error: unknown) =>
      send({
        kind: 'error',
        message: error instanceof Error ? error.message : String(error),
        retryable: !(error instanceof BadInputError),
      }).then(() => process.exit(1)),
    );
});
