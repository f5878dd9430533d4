import type { FineTuningJob, FineTuningJobEvent } from '@lorafleet/contracts';
import { useMemo } from 'preact/hooks';
import type { CheckpointObject } from '../../lib/api-types';
import { metricSeries } from '../../lib/events';
import { isTerminal } from '../../lib/job-status';
import { MetricChart } from '../metric-chart';

/**
 * Loss and token-accuracy curves from the metrics events, with checkpoint metrics filling
 * the steps the events lack. `historyLimit` is set when older events were left unloaded.
 */
export function TrainingCurvesCard({
  status,
  events,
  checkpoints,
  historyLimit,
}: {
  status: FineTuningJob['status'];
  events: FineTuningJobEvent[];
  checkpoints: CheckpointObject[] | null;
  historyLimit: number | null;
}) {
  const series = useMemo(
    () =>
      metricSeries(
        events,
        (checkpoints ?? []).map((c) => ({ step: c.step_number, metrics: c.metrics })),
      ),
    [events, checkpoints],
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
          emptyText={
            isTerminal(status)
              ? 'No training metrics were recorded.'
              : 'Waiting for the first training step…'
          }
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
      {historyLimit !== null ? (
        <p class="muted">Only the latest {historyLimit} events are loaded.</p>
      ) : null}
    </div>
  );
}
