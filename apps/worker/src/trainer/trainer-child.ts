/**
 * Trainer child process: owns tfjs and runs one training attempt from a TrainerSpec.
 * It exits as soon as the IPC channel closes, so it never outlives its worker (R9).
 */
import {
  buildBatch,
  loadTokenizer,
  parseJsonlExamples,
  preflightSummary,
  tokenizeExample,
  DatasetValidationError,
  type TrainingBatch,
} from '@lorafleet/data';
import {
  addLoraAdapter,
  defaultTargetModules,
  exportPeftAdapter,
  loadCausalLM,
  selectBackend,
  trainLora,
} from '@lorafleet/lora-core';
import { version as tfjsVersion } from '@tensorflow/tfjs';
import { createHash } from 'node:crypto';
import type { ChildToParent, ParentToChild, StopReason, TrainerSpec } from './trainer-protocol';

const LORAFLEET_VERSION = '0.1.0';

const sha256Hex = (text: string) => createHash('sha256').update(text).digest('hex');

/** Resolves once the message is handed to the IPC channel, so exiting after it loses nothing. */
function send(message: ChildToParent): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) resolve();
    else process.send(message, undefined, {}, () => resolve());
  });
}

process.on('disconnect', () => process.exit(1));

class BadInputError extends Error {}

async function run(spec: TrainerSpec): Promise<void> {
  const backend = await selectBackend(spec.backend);
  await send({ kind: 'ready', backend, resumedFromStep: null });
  const tokenizer = await loadTokenizer(spec.modelDir);
  let examples;
  try {
    examples = parseJsonlExamples(spec.trainingJsonl);
  } catch (error) {
    if (error instanceof DatasetValidationError) throw new BadInputError(error.message);
    throw error;
  }
  const { n_epochs: epochs, batch_size: batchSize } = spec.hyperparameters;
  const maxSeqLength = spec.training.max_seq_length;
  const summary = preflightSummary(examples, tokenizer, {
    maxSeqLength,
    batchSize,
    epochs,
    gradientAccumulationSteps: spec.training.gradient_accumulation_steps,
  });
  const totalSteps = Math.min(
    summary.totalSteps,
    spec.training.max_steps ?? Number.MAX_SAFE_INTEGER,
  );
  await send({ kind: 'preflight', summary: { ...summary, totalSteps } });

  const tokenized = examples.map((example) =>
    tokenizeExample(example, tokenizer, { maxSeqLength }),
  );
  const batches: TrainingBatch[] = [];
  for (let i = 0; i < tokenized.length; i += batchSize) {
    batches.push(
      buildBatch(tokenized.slice(i, i + batchSize), { padTokenId: tokenizer.padTokenId }),
    );
  }

  const model = await loadCausalLM(spec.modelDir);
  addLoraAdapter(
    model,
    'default',
    {
      r: spec.lora.r,
      alpha: spec.lora.alpha,
      dropout: spec.lora.dropout,
      targetModules: spec.lora.target_modules ?? defaultTargetModules(model.config.modelType),
      useRslora: spec.lora.use_rslora,
    },
    spec.seed,
  );
  let lastReport = 0;
  const csvRows = ['step,epoch,train_loss,learning_rate,tokens_per_second'];
  const result = await trainLora(model, {
    batches,
    totalSteps,
    learningRate: spec.learningRate,
    shouldStop: () => stopRequested !== null,
    onStep: (report) => {
      csvRows.push(
        [
          report.step,
          report.epoch.toFixed(4),
          report.loss,
          report.learningRate,
          report.tokensPerSecond.toFixed(1),
        ].join(','),
      );
      // Report at most ~4 times a second, and always the last step.
      const now = Date.now();
      if (now - lastReport >= 250 || report.step === report.totalSteps) {
        lastReport = now;
        void send({ kind: 'progress', progress: report });
      }
    },
  });
  if (stopRequested !== null) {
    await send({ kind: 'stopped', reason: stopRequested });
    return;
  }
  const exported = exportPeftAdapter(model, 'default', spec.modelName);
  await send({
    kind: 'result',
    result: {
      adapterConfig: exported.adapterConfig as Record<
        string,
        string | number | boolean | null | object
      >,
      adapterSafetensors: exported.adapterSafetensors,
      trainedTokens: result.trainedTokens,
      finalLoss: result.finalLoss,
      steps: result.steps,
      backend,
      metrics: { final_train_loss: result.finalLoss },
      resultCsv: `${csvRows.join('\n')}\n`,
      samples: [],
      lineage: {
        base_model_sha256: model.baseModelSha256 ?? null,
        training_file_sha256: sha256Hex(spec.trainingJsonl),
        validation_file_sha256:
          spec.validationJsonl === null ? null : sha256Hex(spec.validationJsonl),
        hyperparameters: {
          ...spec.hyperparameters,
          learning_rate: spec.learningRate,
          ...spec.training,
        },
        lora: { ...spec.lora },
        tfjs_version: tfjsVersion,
        lorafleet_version: LORAFLEET_VERSION,
      },
    },
  });
}

let stopRequested: StopReason | null = null;

/** Boot-time check (R17): can this machine run the configured backend at all? */
async function probe(requested: string): Promise<void> {
  const backend = await selectBackend(requested);
  await send({ kind: 'ready', backend, resumedFromStep: null });
}

/** Non-finite loss means the hyperparameters diverge; retrying the same run cannot help (R16). */
function classify(error: unknown): unknown {
  if (error instanceof Error && /loss became (NaN|Infinity|-Infinity)/.test(error.message)) {
    return new BadInputError(error.message);
  }
  return error;
}

process.on('message', (message: ParentToChild) => {
  if (message.kind === 'stop') {
    stopRequested ??= message.reason;
    return;
  }
  const work = message.kind === 'probe' ? probe(message.backend) : run(message.spec);
  work
    .then(() => process.exit(0))
    .catch((error: unknown) =>
      send({
        kind: 'error',
        message: error instanceof Error ? error.message : String(error),
        retryable: !(classify(error) instanceof BadInputError),
      }).then(() => process.exit(1)),
    );
});
