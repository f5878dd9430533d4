/**
 * The step-metrics CSV, OpenAI's `result_files` for a fine-tuning job: one row per optimizer
 * step. OpenAI's columns first (`step, train_loss, train_accuracy, valid_loss,
 * valid_mean_token_accuracy`, with `train_accuracy` named `train_mean_token_accuracy` as in
 * DESIGN §6), then lorafleet's extras. `full_valid_*` is filled on the last row only, from
 * the final pass over the whole validation set. Empty cells mean "not measured at this step".
 */
import type { EvalMetrics, StepMetrics } from './trainer.types';

export const METRICS_CSV_COLUMNS = [
  'step',
  'train_loss',
  'train_mean_token_accuracy',
  'valid_loss',
  'valid_mean_token_accuracy',
  'full_valid_loss',
  'full_valid_mean_token_accuracy',
  'epoch',
  'learning_rate',
  'grad_norm',
  'target_tokens',
  'tokens',
  'tokens_per_second',
] as const;

function cell(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return '';
  return Number.isInteger(value) ? String(value) : value.toPrecision(8).replace(/\.?0+$/, '');
}

export function metricsToCsv(
  metrics: readonly StepMetrics[],
  finalValidation?: EvalMetrics | null,
): string {
  const lines: string[] = [METRICS_CSV_COLUMNS.join(',')];
  metrics.forEach((m, index) => {
    const last = index === metrics.length - 1 && finalValidation ? finalValidation : undefined;
    lines.push(
      [
        m.step,
        m.trainLoss,
        m.trainMeanTokenAccuracy,
        m.validLoss,
        m.validMeanTokenAccuracy,
        last?.loss,
        last?.meanTokenAccuracy,
        m.epoch,
        m.learningRate,
        m.gradNorm,
        m.targetTokens,
        m.tokens,
        Math.round(m.tokensPerSecond),
      ]
        .map(cell)
        .join(','),
    );
  });
  return `${lines.join('\n')}\n`;
}
