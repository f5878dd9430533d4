import type { FineTuningJobEvent } from '@lorafleet/contracts';
import type { ListPage } from './api-types';

/** `ftevent-123` → 123: event ids grow with time, so they order the log. */
export function eventSeq(id: string): number {
  const match = /(\d+)$/.exec(id);
  return match ? Number(match[1]) : 0;
}

/** Union of two event lists by id, newest first (the API's order). */
export function mergeEvents(
  known: readonly FineTuningJobEvent[],
  incoming: readonly FineTuningJobEvent[],
): FineTuningJobEvent[] {
  if (incoming.length === 0) return known as FineTuningJobEvent[];
  const byId = new Map<string, FineTuningJobEvent>();
  for (const event of known) byId.set(event.id, event);
  for (const event of incoming) byId.set(event.id, event);
  return [...byId.values()].sort((a, b) => eventSeq(b.id) - eventSeq(a.id));
}

/** Newest known event sequence number, or -1. */
export function newestSeq(events: readonly FineTuningJobEvent[]): number {
  return events.length ? eventSeq(events[0].id) : -1;
}

/** The events the log shows (metrics events only on request) and how many metrics events exist. */
export function visibleEvents(
  events: readonly FineTuningJobEvent[],
  showMetricEvents: boolean,
): { shown: FineTuningJobEvent[]; metricEventCount: number } {
  const withoutMetrics = events.filter((e) => e.type !== 'metrics');
  return {
    shown: showMetricEvents ? [...events] : withoutMetrics,
    metricEventCount: events.length - withoutMetrics.length,
  };
}

export const CHART_METRICS = [
  'train_loss',
  'valid_loss',
  'train_mean_token_accuracy',
  'valid_mean_token_accuracy',
] as const;
export type ChartMetric = (typeof CHART_METRICS)[number];

/**
 * A DPO job's metrics (issue 20, docs/trainer.md §4a): the loss is the DPO loss, and the
 * rewards are TRL's `rewards/chosen`, `rewards/rejected`, `rewards/margins` and
 * `rewards/accuracies`, for training steps and validation passes.
 */
export const DPO_CHART_METRICS = [
  'train_loss',
  'valid_loss',
  'train_rewards_chosen',
  'train_rewards_rejected',
  'train_rewards_margin',
  'train_rewards_accuracy',
  'valid_rewards_margin',
  'valid_rewards_accuracy',
] as const;
export type DpoChartMetric = (typeof DPO_CHART_METRICS)[number];

export interface MetricSeries<M extends string = ChartMetric> {
  steps: number[];
  values: Record<M, (number | null)[]>;
  /** How many points each metric has (non-null values). */
  counts: Record<M, number>;
}

const finite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** A step's metrics from elsewhere (checkpoints carry metrics the step events may lack). */
export interface StepMetrics {
  step: number;
  metrics: Record<string, unknown>;
}

/**
 * Step-indexed metric series from `type: "metrics"` events. A step reported twice (a resumed
 * attempt replays steps after its last checkpoint) keeps the latest value. `extra` (checkpoint
 * metrics) fills only values the events do not have for that step. `names` picks the metrics
 * (default: the supervised ones; a DPO job's are {@link DPO_CHART_METRICS}).
 */
export function metricSeries<M extends string = ChartMetric>(
  events: readonly FineTuningJobEvent[],
  extra: readonly StepMetrics[] = [],
  names: readonly M[] = CHART_METRICS as unknown as readonly M[],
): MetricSeries<M> {
  const byStep = new Map<number, Partial<Record<M, number>>>();
  const chronological = [...events].sort((a, b) => eventSeq(a.id) - eventSeq(b.id));
  for (const event of chronological) {
    if (event.type !== 'metrics' || !event.data) continue;
    const step = event.data.step;
    if (!finite(step)) continue;
    const row: Partial<Record<M, number>> = byStep.get(step) ?? {};
    for (const metric of names) {
      const value = event.data[metric];
      if (finite(value)) row[metric] = value;
    }
    byStep.set(step, row);
  }
  for (const { step, metrics } of extra) {
    if (!finite(step)) continue;
    const row: Partial<Record<M, number>> = byStep.get(step) ?? {};
    for (const metric of names) {
      const value = metrics[metric];
      if (row[metric] === undefined && finite(value)) row[metric] = value;
    }
    byStep.set(step, row);
  }
  const steps = [...byStep.keys()].sort((a, b) => a - b);
  const values = Object.fromEntries(
    names.map((m) => [m, [] as (number | null)[]]),
  ) as MetricSeries<M>['values'];
  const counts = Object.fromEntries(names.map((m) => [m, 0])) as MetricSeries<M>['counts'];
  for (const step of steps) {
    const row = byStep.get(step)!;
    for (const metric of names) {
      const value = row[metric];
      values[metric].push(value ?? null);
      if (value !== undefined) counts[metric] += 1;
    }
  }
  return { steps, values, counts };
}

/** One page of a job's events, newest first, starting after the event `after` (null: the newest). */
export type EventPageFetcher = (after: string | null) => Promise<ListPage<FineTuningJobEvent>>;

/**
 * A job's event history, newest first, walking back at most `maxPages` pages; `truncated`
 * when older pages remained.
 */
export async function fetchEventHistory(
  fetchPage: EventPageFetcher,
  maxPages: number,
): Promise<{ events: FineTuningJobEvent[]; truncated: boolean }> {
  const events: FineTuningJobEvent[] = [];
  let after: string | null = null;
  for (let pageNo = 0; pageNo < maxPages; pageNo += 1) {
    const page = await fetchPage(after);
    events.push(...page.data);
    if (!page.has_more || page.data.length === 0) return { events, truncated: false };
    after = page.data[page.data.length - 1].id;
  }
  return { events, truncated: true };
}

/**
 * The newest pages, handed to `onPage` one by one, until a page reaches back to an event at
 * or before `knownSeq` (so nothing in between is skipped), the log ends, or `maxPages` pages.
 */
export async function fetchNewEvents(
  fetchPage: EventPageFetcher,
  knownSeq: number,
  onPage: (events: FineTuningJobEvent[]) => void,
  maxPages: number,
): Promise<void> {
  let after: string | null = null;
  for (let pageNo = 0; pageNo < maxPages; pageNo += 1) {
    const page = await fetchPage(after);
    onPage(page.data);
    const oldest = page.data.at(-1);
    if (!page.has_more || !oldest || eventSeq(oldest.id) <= knownSeq) return;
    after = oldest.id;
  }
}
