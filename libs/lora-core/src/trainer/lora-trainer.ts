import type { TrainingBatch } from '@lorafleet/data';
import * as tf from '@tensorflow/tfjs';
import type { CausalLM } from '../models/causal-lm.model';
import { causalLmLoss } from '../train/causal-lm.loss';

export interface TrainStepReport {
  step: number;
  totalSteps: number;
  epoch: number;
  loss: number;
  learningRate: number;
  tokensPerSecond: number;
  etaSeconds: number;
}

export interface LoraTrainOptions {
  /** Batches of one epoch, in order; the loop cycles through them. */
  batches: TrainingBatch[];
  totalSteps: number;
  learningRate: number;
  onStep?: (report: TrainStepReport) => void | Promise<void>;
  /** Checked before every step; returning true stops training early. */
  shouldStop?: () => boolean;
}

export interface LoraTrainResult {
  steps: number;
  finalLoss: number;
  /** Target tokens seen by the loss, summed over steps. */
  trainedTokens: number;
}

/**
 * Batches use libs/data's convention: `lossMask[b][t] = 1` marks token t as a target,
 * predicted from position t-1; prompt and padding tokens are 0, so the loss covers
 * completion tokens only (LoRA paper's conditional LM objective).
 *
 * A plain LoRA training loop: Adam on the model's trainable variables only (the LoRA A/B
 * matrices in LoRA mode), one batch per step, yielding to the event loop after each step so
 * the caller's IPC and cancellation stay responsive.
 */
export async function trainLora(
  model: CausalLM,
  options: LoraTrainOptions,
): Promise<LoraTrainResult> {
  if (options.batches.length === 0) throw new Error('trainLora needs at least one batch');
  const variables = model.trainableVariables();
  if (variables.length === 0)
    throw new Error('model has no trainable variables; add a LoRA adapter first');
  const optimizer = tf.train.adam(options.learningRate);
  const started = Date.now();
  let trainedTokens = 0;
  let finalLoss = Number.NaN;
  let step = 0;
  try {
    for (; step < options.totalSteps; step++) {
      if (options.shouldStop?.()) break;
      const batch = options.batches[step % options.batches.length];
      const ids = tf.tensor2d(batch.inputIds, undefined, 'int32'); // [B, T]
      const attention = tf.tensor2d(batch.attentionMask, undefined, 'float32'); // [B, T]
      const lossMask = tf.tensor2d(batch.lossMask, undefined, 'float32'); // [B, T]
      try {
        const loss = optimizer.minimize(
          () => causalLmLoss(model.forward(ids, attention, { training: true }), ids, lossMask),
          true,
          variables,
        );
        finalLoss = (await loss!.data())[0];
        loss!.dispose();
      } finally {
        ids.dispose();
        attention.dispose();
        lossMask.dispose();
      }
      if (!Number.isFinite(finalLoss)) {
        throw new Error(`loss became ${finalLoss} at step ${step + 1}; lower the learning rate`);
      }
      trainedTokens += batch.lossMask.reduce(
        (sum, row) => sum + row.slice(1).reduce((a, b) => a + b, 0),
        0,
      );
      const elapsed = (Date.now() - started) / 1000;
      const done = step + 1;
      await options.onStep?.({
        step: done,
        totalSteps: options.totalSteps,
        epoch: done / options.batches.length,
        loss: finalLoss,
        learningRate: options.learningRate,
        tokensPerSecond: elapsed > 0 ? trainedTokens / elapsed : 0,
        etaSeconds: (elapsed / done) * (options.totalSteps - done),
      });
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  } finally {
    optimizer.dispose();
  }
  return { steps: step, finalLoss, trainedTokens };
}
