/**
 * Trainer child process: owns tfjs and runs one training attempt from a TrainerSpec with
 * lora-core's `runFineTune`. It checkpoints through the parent (R5), stops cleanly on
 * pause or shutdown (R12), and exits as soon as the IPC channel closes, so it never outlives
 * its worker (R9).
 */
import { isOutOfMemoryError, truncationWarning } from '@lorafleet/data';
import {
  CheckpointError,
  TRUNCATION_WARNING_SHARE,
  TrainingAbortedError,
  memoryLimitMbFromEnv,
  runFineTune,
  selectBackend,
  type FineTunePreflight,
  type FineTuneResult,
} from '@lorafleet/lora-core';
import { LORAFLEET_VERSION, LineageSchema } from '@lorafleet/contracts';
import type { JsonObject } from '@lorafleet/db';
import {
  ClassifiedError,
  classifyFailure,
  outOfMemoryFailure,
  peakMemoryMb,
} from './trainer-failures';
import {
  rewardMetricFields,
  type ChildToParent,
  type ParentToChild,
  type StopReason,
  type TrainerSpec,
} from './trainer-protocol';

/** Resolves once the message is handed to the IPC channel, so exiting after it loses nothing. */
function send(message: ChildToParent): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) resolve();
    else process.send(message, undefined, {}, () => resolve());
  });
}

process.on('disconnect', () => process.exit(1));

const stopController = new AbortController();
let stopReason: StopReason | null = null;

async function run(spec: TrainerSpec): Promise<void> {
  const backend = await selectBackend(spec.backend);
  let lastProgress = 0;
  let tokensPerSecond: number | null = null;
  let preflightSeen: FineTunePreflight | null = null;
  const train = (resumeFrom: Uint8Array | null): Promise<FineTuneResult> =>
    runFineTune({
      model: spec.modelDir,
      trainJsonl: spec.trainingJsonl,
      validationJsonl: spec.validationJsonl,
      spec: spec.spec,
      memoryLimitMb: spec.memoryLimitMb,
      resumeFrom,
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
                    ...(checkpoint.metrics.trainMeanTokenAccuracy === undefined
                      ? {}
                      : { train_mean_token_accuracy: checkpoint.metrics.trainMeanTokenAccuracy }),
                    ...rewardMetricFields('train', checkpoint.metrics.dpo),
                    ...(checkpoint.metrics.validLoss === undefined
                      ? {}
                      : { valid_loss: checkpoint.metrics.validLoss }),
                    ...(checkpoint.metrics.validMeanTokenAccuracy === undefined
                      ? {}
                      : { valid_mean_token_accuracy: checkpoint.metrics.validMeanTokenAccuracy }),
                    ...rewardMetricFields('valid', checkpoint.metrics.validDpo),
                  }
                : {},
              blob: checkpoint.blob,
            },
          }),
      },
      lineage: { backend, lorafleet_version: LORAFLEET_VERSION, job_id: spec.jobId },
      onPreflight: async (preflight) => {
        preflightSeen = preflight;
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
            examplesWithTruncatedTargets: preflight.examplesWithTruncatedTargets,
            longestKeptTokens: preflight.longestKeptTokens,
            longestExampleTokens: preflight.longestExampleTokens,
            totalSteps: preflight.totalSteps,
            memoryEstimateMb: preflight.memoryEstimateMb,
            memoryLimitMb: preflight.memoryLimitMb,
            gradientCheckpointing: preflight.gradientCheckpointing,
          },
        });
        // Once per job: a resumed attempt sees the same data.
        const warning =
          preflight.resumeStep === 0
            ? truncationWarning(preflight, TRUNCATION_WARNING_SHARE)
            : null;
        if (warning !== null) {
          await send({
            kind: 'warning',
            message: warning,
            data: {
              examples: preflight.examples,
              examples_with_truncated_targets: preflight.examplesWithTruncatedTargets,
              max_seq_length: preflight.longestKeptTokens,
              longest_example_tokens: preflight.longestExampleTokens,
            },
          });
        }
      },
      onProgress: (progress) => {
        // Every step: the last one's attempt average is the job's recorded throughput.
        tokensPerSecond = progress.tokensPerSecond;
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
            ...(progress.dpo
              ? { dpo: progress.dpo }
              : { meanTokenAccuracy: progress.meanTokenAccuracy }),
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
          metrics: {
            valid_loss: report.loss,
            ...(report.meanTokenAccuracy === undefined
              ? {}
              : { valid_mean_token_accuracy: report.meanTokenAccuracy }),
            ...rewardMetricFields('valid', report.dpo),
          },
        }),
    });
  let result: FineTuneResult;
  try {
    result = await resumeOrRestart(train, spec.resumeFrom);
  } catch (error) {
    if (error instanceof TrainingAbortedError && stopReason !== null) {
      await send({ kind: 'stopped', reason: stopReason });
      return;
    }
    if (isOutOfMemoryError(error))
      throw new ClassifiedError(await outOfMemoryFailure(spec, preflightSeen));
    throw error;
  }
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
              ...(result.validation.meanTokenAccuracy === undefined
                ? {}
                : { valid_mean_token_accuracy: result.validation.meanTokenAccuracy }),
              ...rewardMetricFields('valid', result.validation.dpo),
            }
          : {}),
      },
      resultCsv: result.metricsCsv,
      samples: result.samples.map((s) => ({
        prompt: s.prompt,
        completion: s.completion,
        reference: s.reference,
      })),
      lineage: LineageSchema.parse({
        ...result.lineage,
        // The backend as lorafleet names it (`wasm-blas`, not tfjs's `wasm`), as the job has it.
        backend,
        lorafleet_version: LORAFLEET_VERSION,
        // Verified against the job's recorded hash before training (config, weights, tokenizer).
        base_model_hash: spec.baseModelHash,
        fine_tuning_job_id: spec.jobId,
      }),
      peakMemoryMb: peakMemoryMb(),
      tokensPerSecond,
    },
  });
}

/**
 * Trains from the job's checkpoint, or from step 0 when it has none. A checkpoint this code
 * cannot resume (written by an older lorafleet whose run configuration hashed differently, or
 * damaged) must not fail the job on every attempt: training is deterministic from step 0, so
 * starting over gives the adapter the resumed run would have (R6), only later. The job's
 * events say so.
 */
async function resumeOrRestart(
  train: (resumeFrom: Uint8Array | null) => Promise<FineTuneResult>,
  resumeFrom: Uint8Array | null,
): Promise<FineTuneResult> {
  if (!resumeFrom) return train(null);
  try {
    return await train(resumeFrom);
  } catch (error) {
    if (!(error instanceof CheckpointError)) throw error;
    await send({
      kind: 'warning',
      message: `The job's checkpoint could not be resumed (${error.message}); training restarts from step 0.`,
      data: {},
    });
    return train(null);
  }
}

/** Boot-time check (R17): can this machine run the configured backend at all? */
async function probe(requested: string): Promise<void> {
  const backend = await selectBackend(requested);
  // The limit this worker registers: resolved here, by the kind of process that trains.
  await send({
    kind: 'ready',
    backend,
    resumedFromStep: null,
    memoryLimitMb: memoryLimitMbFromEnv(),
  });
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
      send({ kind: 'error', failure: classifyFailure(error) }).then(() => process.exit(1)),
    );
});
