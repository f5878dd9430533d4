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
import type { ChildToParent, ParentToChild, TrainerSpec } from './trainer-protocol';

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
  await send({ kind: 'ready', backend });
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
  const result = await trainLora(model, {
    batches,
    totalSteps,
    learningRate: spec.learningRate,
    onStep: (report) => {
      // Report at most ~4 times a second, and always the last step.
      const now = Date.now();
      if (now - lastReport >= 250 || report.step === report.totalSteps) {
        lastReport = now;
        void send({ kind: 'progress', progress: report });
      }
    },
  });
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
    },
  });
}

process.on('message', (message: ParentToChild) => {
  if (message.kind === 'stop') process.exit(0);
  run(message.spec)
    .then(() => process.exit(0))
    .catch((error: unknown) =>
      send({
        kind: 'error',
        message: error instanceof Error ? error.message : String(error),
        retryable: !(error instanceof BadInputError),
      }).then(() => process.exit(1)),
    );
});
