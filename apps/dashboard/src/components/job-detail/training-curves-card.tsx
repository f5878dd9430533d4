import type { FineTuningJob, FineTuningJobEvent } from '@lorafleet/contracts';
import { useMemo } from 'preact/hooks';
import type { CheckpointObject } from '../../lib/api-types';
import { DPO_CHART_METRICS, metricSeries, type StepMetrics } from '../../lib/events';
import { isTerminal } from '../../lib/job-status';
import { MetricChart } from '../metric-chart';

/**
 * Loss and token-accuracy curves from the metrics events, with checkpoint metrics filling
 * the steps the events lack; a DPO job (`method` "dpo") gets its DPO loss, rewards and reward
 * accuracy instead. `historyLimit` is set when older events were left unloaded.
 */
export function TrainingCurvesCard({
  status,
  method = 'supervised',
  events,
  checkpoints,
  historyLimit,
}: {
  status: FineTuningJob['status'];
  method?: FineTuningJob['method']['type'];
  events: FineTuningJobEvent[];
  checkpoints: CheckpointObject[] | null;
  historyLimit: number | null;
}) {
  const checkpointMetrics = useMemo(
    () => (checkpoints ?? []).map((c) => ({ step: c.step_number, metrics: c.metrics })),
    [checkpoints],
  );
  if (method === 'dpo') {
    return (
      <DpoCurvesCard
        status={status}
        events={events}
        checkpointMetrics={checkpointMetrics}
        historyLimit={historyLimit}
      />
    );
  }
  return (
    <SupervisedCurvesCard
      status={status}
      events={events}
      checkpointMetrics={checkpointMetrics}
      historyLimit={historyLimit}
    />
  );
}

interface CurvesProps {
  status: FineTuningJob['status'];
  events: FineTuningJobEvent[];
  checkpointMetrics: StepMetrics[];
  historyLimit: number | null;
}

function emptyText(status: FineTuningJob['status']): string {
  return isTerminal(status)
    ? 'No training metrics were recorded.'
    : 'Waiting for the first training step…';
}

function HistoryNote({ historyLimit }: { historyLimit: number | null }) {
  return historyLimit !== null ? (
    <p class="muted">Only the latest {historyLimit} events are loaded.</p>
  ) : null;
}

function SupervisedCurvesCard({ status, events, checkpointMetrics, historyLimit }: CurvesProps) {
  const series = useMemo(
    () => metricSeries(events, checkpointMetrics),
    [events, checkpointMetrics],
  );
  const hasAccuracy =
    series.counts.train_mean_token_accuracy + series.counts.valid_mean_token_accuracy > 0;
  return (
    <div class="card">
      <h2>Training curves</h2>
      <div class="charts">
        <MetricChart
          id="loss-chart"
          title="Loss"
          yLabel="loss"
          steps={series.steps}
          series={[
            { label: 'train loss', values: series.values.train_loss, color: '#1d4ed8' },
            {
              label: 'valid loss',
              values: series.values.valid_loss,
              color: '#c2410c',
              dash: [6, 4],
            },
          ]}
          emptyText={emptyText(status)}
        />
        {hasAccuracy ? (
          <MetricChart
            id="accuracy-chart"
            title="Token accuracy"
            yLabel="accuracy"
            yRange={[0, 1]}
            steps={series.steps}
            series={[
              {
                label: 'train accuracy',
                values: series.values.train_mean_token_accuracy,
                color: '#047857',
              },
              {
                label: 'valid accuracy',
                values: series.values.valid_mean_token_accuracy,
                color: '#7c3aed',
                dash: [6, 4],
              },
            ]}
            emptyText="No accuracy reported yet."
          />
        ) : (
          <p class="muted chart-note">Token accuracy appears here once the worker reports it.</p>
        )}
      </div>
      <HistoryNote historyLimit={historyLimit} />
    </div>
  );
}

/**
 * A DPO job's curves (docs/trainer.md §4a): the DPO loss −log σ(β·z), the rewards
 * β·(log π − log π_ref) of the chosen and rejected completions with their margin, and the
 * share of pairs whose chosen reward is higher (reward accuracy), for training and validation.
 */
function DpoCurvesCard({ status, events, checkpointMetrics, historyLimit }: CurvesProps) {
  const series = useMemo(
    () => metricSeries(events, checkpointMetrics, DPO_CHART_METRICS),
    [events, checkpointMetrics],
  );
  return (
    <div class="card">
      <h2>Training curves (DPO)</h2>
      <div class="charts">
        <MetricChart
          id="loss-chart"
          title="DPO loss"
          yLabel="loss"
          steps={series.steps}
          series={[
            { label: 'train DPO loss', values: series.values.train_loss, color: '#1d4ed8' },
            {
              label: 'valid DPO loss',
              values: series.values.valid_loss,
              color: '#c2410c',
              dash: [6, 4],
            },
          ]}
          emptyText={emptyText(status)}
        />
        <MetricChart
          id="rewards-chart"
          title="Rewards"
          yLabel="reward"
          steps={series.steps}
          series={[
            { label: 'chosen', values: series.values.train_rewards_chosen, color: '#047857' },
            { label: 'rejected', values: series.values.train_rewards_rejected, color: '#b91c1c' },
            { label: 'margin', values: series.values.train_rewards_margin, color: '#1d4ed8' },
            {
              label: 'valid margin',
              values: series.values.valid_rewards_margin,
              color: '#7c3aed',
              dash: [6, 4],
            },
          ]}
          emptyText={emptyText(status)}
        />
        <MetricChart
          id="reward-accuracy-chart"
          title="Reward accuracy"
          yLabel="accuracy"
          yRange={[0, 1]}
          steps={series.steps}
          series={[
            {
              label: 'train reward accuracy',
              values: series.values.train_rewards_accuracy,
              color: '#047857',
            },
            {
              label: 'valid reward accuracy',
              values: series.values.valid_rewards_accuracy,
              color: '#7c3aed',
              dash: [6, 4],
            },
          ]}
          emptyText="No reward accuracy reported yet."
        />
      </div>
      <HistoryNote historyLimit={historyLimit} />
    </div>
  );
}
