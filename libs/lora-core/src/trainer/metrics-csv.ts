/**
 * The step-metrics CSV, OpenAI's `result_files` for a fine-tuning job: one row per optimizer
 * step. OpenAI's columns first (`step, train_loss, train_accuracy, valid_loss,
 * valid_mean_token_accuracy`, with `train_accuracy` named `train_mean_token_accuracy` as in
 * DESIGN §6), then lorafleet's extras. `full_valid_*` is filled on the last row only, from
 * the final pass over the whole validation set. Empty cells mean "not measured at this step".
 * A DPO run (issue 20) leaves the token-accuracy columns empty and adds the reward columns,
 * TRL's `rewards/chosen`, `rewards/rejected`, `rewards/margins` and `rewards/accuracies`, for
 * training and validation; a supervised run's CSV keeps its columns exactly.
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

/** Appended after {@link METRICS_CSV_COLUMNS} when the run is DPO. */
export const DPO_METRICS_CSV_COLUMNS = [
  'train_rewards_chosen',
  'train_rewards_rejected',
  'train_rewards_margin',
  'train_rewards_accuracy',
  'valid_rewards_chosen',
  'valid_rewards_rejected',
  'valid_rewards_margin',
  'valid_rewards_accuracy',
  'full_valid_rewards_accuracy',
] as const;

function cell(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return '';
  return Number.isInteger(value) ? String(value) : value.toPrecision(8).replace(/\.?0+$/, '');
}

export function metricsToCsv(
  metrics: readonly StepMetrics[],
  finalValidation?: EvalMetrics | null,
): string {
  const dpo = metrics.some((m) => m.dpo !== undefined);
  const header = dpo ? [...METRICS_CSV_COLUMNS, ...DPO_METRICS_CSV_COLUMNS] : METRICS_CSV_COLUMNS;
  const lines: string[] = [header.join(',')];
  metrics.forEach((m, index) => {
    const last = index === metrics.length - 1 && finalValidation ? finalValidation : undefined;
    const rewards = dpo
      ? [
          m.dpo?.rewardsChosen,
          m.dpo?.rewardsRejected,
          m.dpo?.rewardsMargin,
          m.dpo?.rewardsAccuracy,
          m.validDpo?.rewardsChosen,
          m.validDpo?.rewardsRejected,
          m.validDpo?.rewardsMargin,
          m.validDpo?.rewardsAccuracy,
          last?.dpo?.rewardsAccuracy,
        ]
      : [];
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
        ...rewards,
      ]
        .map(cell)
        .join(','),
    );
  });
  return `${lines.join('\n')}\n`;
}
