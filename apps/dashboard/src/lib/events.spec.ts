import type { FineTuningJobEvent } from '@lorafleet/contracts';
import { eventSeq, mergeEvents, metricSeries, newestSeq } from './events';

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
