import { randomInt } from 'node:crypto';
import {
  DEFAULT_BASE_LEARNING_RATE,
  FineTuneSpecRequestSchema,
  FineTuneSpecSchema,
  HyperparametersSchema,
  TrainingOptionsRequestSchema,
  resolveHyperparameters,
  type FineTuneSpec,
  type FineTuneSpecRequest,
} from '@lorafleet/contracts';
import { defaultMaxSeqLength } from './models/model-facts';

/** What resolving "auto" and the model-dependent defaults needs to know. */
export interface FineTuneSpecContext {
  /** The base model's name, for messages. */
  model: string;
  /** `ModelFacts.contextLength` of the base model. */
  contextLength: number;
  /** Examples in the training file (libs/data's validator counts them): sizes "auto". */
  trainingExamples: number;
  /**
   * `ModelFacts.defaultLearningRate`: the learning rate a multiplier of 1 means for this model.
   * Callers that always give `training.learning_rate` (benches, tests) may leave it out.
   */
  baseLearningRate?: number;
}

/** A request the base model cannot train; `param` names the field, as an OpenAI error does. */
export class FineTuneSpecError extends Error {
  override readonly name = 'FineTuneSpecError';
  constructor(
    message: string,
    readonly param: string,
  ) {
    super(message);
  }
}

/**
 * The one place a `FineTuneSpec` is made: the API before it stores a job, `lorafleet train`
 * before it trains. "auto" hyperparameters follow OpenAI's heuristic, `max_seq_length`
 * defaults to `defaultMaxSeqLength`, `learning_rate` to the multiplier × the model's base rate, and
 * everything else to the contracts schemas' defaults. Bad values throw the schemas' ZodError;
 * a `max_seq_length` beyond the context length throws `FineTuneSpecError`.
 */
export function resolveFineTuneSpec(
  request: FineTuneSpecRequest,
  context: FineTuneSpecContext,
): FineTuneSpec {
  // One parse of the whole request: a bad value's ZodError path is its request path.
  const parsed = FineTuneSpecRequestSchema.parse(request);
  const hyperparameters = resolveHyperparameters(
    parsed.hyperparameters ?? HyperparametersSchema.parse({}),
    context.trainingExamples,
  );
  const training = parsed.training ?? TrainingOptionsRequestSchema.parse({});
  const maxSeqLength = training.max_seq_length ?? defaultMaxSeqLength(context.contextLength);
  if (maxSeqLength > context.contextLength) {
    // The trainer would refuse every attempt; say so before anything is stored or loaded.
    throw new FineTuneSpecError(
      `training.max_seq_length ${maxSeqLength} exceeds the context length of ${context.model} (${context.contextLength})`,
      'training.max_seq_length',
    );
  }
  return FineTuneSpecSchema.parse({
    seed: parsed.seed ?? randomInt(0, 2_147_483_647),
    hyperparameters,
    lora: parsed.lora ?? {},
    training: {
      ...training,
      max_seq_length: maxSeqLength,
      learning_rate:
        training.learning_rate ??
        hyperparameters.learning_rate_multiplier *
          (context.baseLearningRate ?? DEFAULT_BASE_LEARNING_RATE),
    },
  });
}
