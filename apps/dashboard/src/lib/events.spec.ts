import type { FineTuningJobEvent } from '@lorafleet/contracts';
import type { ListPage } from './api-types';
import {
  eventSeq,
  fetchEventHistory,
  fetchNewEvents,
  mergeEvents,
  metricSeries,
  DPO_CHART_METRICS,
  newestSeq,
  visibleEvents,
  type EventPageFetcher,
} from './events';

const event = (
  seq: number,
  type: FineTuningJobEvent['type'],
  data: Record<string, unknown> | null = null,
): FineTuningJobEvent => ({
  id: `ftevent-${seq}`,
  object: 'fine_tuning.job.event',
  created_at: 1_700_000_000 + seq,
  level: 'info',
  message: `event ${seq}`,
  type,
  data,
});

describe('events', () => {
  it('orders by the numeric part of the id, newest first, without duplicates', () => {
    expect(eventSeq('ftevent-120')).toBe(120);
    const merged = mergeEvents(
      [event(9, 'message'), event(8, 'message')],
      [event(10, 'status'), event(9, 'message')],
    );
    expect(merged.map((e) => e.id)).toEqual(['ftevent-10', 'ftevent-9', 'ftevent-8']);
    expect(newestSeq(merged)).toBe(10);
    expect(newestSeq([])).toBe(-1);
  });

  it('hides metrics events unless asked, and counts them', () => {
    const events = [event(3, 'metrics'), event(2, 'status'), event(1, 'metrics')];
    const hidden = visibleEvents(events, false);
    expect(hidden.shown.map((e) => e.id)).toEqual(['ftevent-2']);
    expect(hidden.metricEventCount).toBe(2);
    const shown = visibleEvents(events, true);
    expect(shown.shown.map((e) => e.id)).toEqual(['ftevent-3', 'ftevent-2', 'ftevent-1']);
    expect(shown.metricEventCount).toBe(2);
  });

  it('keeps the same array when nothing arrives (no re-render)', () => {
    const known = [event(1, 'message')];
    expect(mergeEvents(known, [])).toBe(known);
  });

  it('builds step-indexed series from metrics events only', () => {
    const series = metricSeries([
      event(5, 'metrics', { step: 3, train_loss: 2.5, valid_loss: 2.9 }),
      event(4, 'metrics', { step: 2, train_loss: 2.8 }),
      event(3, 'status', { status: 'running' }),
      event(2, 'metrics', { step: 1, train_loss: 3.1, train_mean_token_accuracy: 0.1 }),
      event(1, 'message', { step: 99, train_loss: 0 }),
    ]);
    expect(series.steps).toEqual([1, 2, 3]);
    expect(series.values.train_loss).toEqual([3.1, 2.8, 2.5]);
    expect(series.values.valid_loss).toEqual([null, null, 2.9]);
    expect(series.values.train_mean_token_accuracy).toEqual([0.1, null, null]);
    expect(series.counts).toEqual({
      train_loss: 3,
      valid_loss: 1,
      train_mean_token_accuracy: 1,
      valid_mean_token_accuracy: 0,
    });
  });

  it('keeps the latest value when a resumed attempt replays steps', () => {
    const series = metricSeries([
      event(4, 'metrics', { step: 2, train_loss: 1.5 }), // replayed after takeover
      event(3, 'metrics', { step: 3, train_loss: 1.9 }),
      event(2, 'metrics', { step: 2, train_loss: 2.0 }),
      event(1, 'metrics', { step: 1, train_loss: 2.2 }),
    ]);
    expect(series.steps).toEqual([1, 2, 3]);
    expect(series.values.train_loss).toEqual([2.2, 1.5, 1.9]);
  });

  it('ignores malformed metric payloads', () => {
    const series = metricSeries([
      event(2, 'metrics', { step: 'x', train_loss: 1 }),
      event(1, 'metrics', { step: 1, train_loss: Number.NaN }),
    ]);
    expect(series.steps).toEqual([1]);
    expect(series.values.train_loss).toEqual([null]);
    expect(series.counts.train_loss).toBe(0);
  });
});

describe('metricSeries of a DPO job', () => {
  it('builds the reward series from metrics events and checkpoints', () => {
    const series = metricSeries(
      [
        event(3, 'metrics', {
          step: 2,
          train_loss: 0.6,
          valid_loss: 0.65,
          valid_rewards_margin: 0.1,
        }),
        event(2, 'metrics', {
          step: 1,
          train_loss: 0.69,
          train_rewards_chosen: 0.02,
          train_rewards_rejected: -0.01,
          train_rewards_margin: 0.03,
          train_rewards_accuracy: 0.5,
        }),
      ],
      [{ step: 2, metrics: { train_rewards_accuracy: 1, train_loss: 9 } }],
      DPO_CHART_METRICS,
    );
    expect(series.steps).toEqual([1, 2]);
    expect(series.values.train_loss).toEqual([0.69, 0.6]);
    expect(series.values.train_rewards_margin).toEqual([0.03, null]);
    expect(series.values.train_rewards_accuracy).toEqual([0.5, 1]);
    expect(series.values.valid_rewards_margin).toEqual([null, 0.1]);
    expect(series.counts.train_rewards_chosen).toBe(1);
    expect(Object.keys(series.values)).toEqual([...DPO_CHART_METRICS]);
  });
});

describe('metricSeries with checkpoint metrics', () => {
  it('fills values the events lack, never overriding them', () => {
    const series = metricSeries(
      [
        event(2, 'metrics', { step: 5, train_loss: 2.0 }),
        event(1, 'metrics', { step: 4, train_loss: 2.1 }),
      ],
      [
        { step: 5, metrics: { train_loss: 9.9, train_mean_token_accuracy: 0.25 } },
        { step: 10, metrics: { train_loss: 1.5, valid_loss: 1.7, note: 'x' } },
      ],
    );
    expect(series.steps).toEqual([4, 5, 10]);
    expect(series.values.train_loss).toEqual([2.1, 2.0, 1.5]);
    expect(series.values.train_mean_token_accuracy).toEqual([null, 0.25, null]);
    expect(series.values.valid_loss).toEqual([null, null, 1.7]);
  });
});

/**
 * An event log of `count` events (ids 1..count) served newest first in pages of `pageSize`,
 * with the API's `after` cursor; it records every cursor it was asked for.
 */
function pagedLog(
  count: number,
  pageSize: number,
): { fetch: EventPageFetcher; cursors: (string | null)[] } {
  const log = Array.from({ length: count }, (_, i) => event(count - i, 'message'));
  const cursors: (string | null)[] = [];
  const fetch: EventPageFetcher = (after) => {
    cursors.push(after);
    const start = after === null ? 0 : log.findIndex((e) => e.id === after) + 1;
    const data = log.slice(start, start + pageSize);
    const page: ListPage<FineTuningJobEvent> = {
      object: 'list',
      data,
      has_more: start + pageSize < log.length,
    };
    return Promise.resolve(page);
  };
  return { fetch, cursors };
}

describe("paging through a job's events", () => {
  it('loads the whole history, newest first, following the cursor', async () => {
    const log = pagedLog(25, 10);
    const history = await fetchEventHistory(log.fetch, 50);
    expect(history.truncated).toBe(false);
    expect(history.events.map((e) => eventSeq(e.id))).toEqual(
      Array.from({ length: 25 }, (_, i) => 25 - i),
    );
    expect(log.cursors).toEqual([null, 'ftevent-16', 'ftevent-6']);
  });

  it('stops at the page limit and says the history is truncated', async () => {
    const log = pagedLog(25, 10);
    const history = await fetchEventHistory(log.fetch, 2);
    expect(history.truncated).toBe(true);
    expect(history.events).toHaveLength(20);
    expect(newestSeq(history.events)).toBe(25);
  });

  it('reports an empty log as complete', async () => {
    expect(await fetchEventHistory(pagedLog(0, 10).fetch, 50)).toEqual({
      events: [],
      truncated: false,
    });
  });

  it('fetches new pages only until they reach back to a known event', async () => {
    const log = pagedLog(25, 10);
    const pages: number[][] = [];
    await fetchNewEvents(
      log.fetch,
      12,
      (events) => pages.push(events.map((e) => eventSeq(e.id))),
      10,
    );
    // The second page (15..6) reaches event 12, so no third page is asked for.
    expect(pages).toEqual([
      [25, 24, 23, 22, 21, 20, 19, 18, 17, 16],
      [15, 14, 13, 12, 11, 10, 9, 8, 7, 6],
    ]);
    expect(log.cursors).toEqual([null, 'ftevent-16']);
  });

  it('stops after one page when the newest page overlaps what is known', async () => {
    const log = pagedLog(25, 10);
    const pages: FineTuningJobEvent[][] = [];
    await fetchNewEvents(log.fetch, 20, (events) => pages.push(events), 10);
    expect(pages).toHaveLength(1);
    expect(log.cursors).toEqual([null]);
  });

  it('asks for no more than the page limit when nothing is known yet', async () => {
    const log = pagedLog(25, 10);
    await fetchNewEvents(log.fetch, -1, () => undefined, 2);
    expect(log.cursors).toEqual([null, 'ftevent-16']);
  });
});
