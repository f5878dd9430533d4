/**
 * Follows one job until it reaches a terminal status: polls `GET /v1/fine_tuning/jobs/{id}`
 * with `If-None-Match` (an unchanged job costs a 304 and no body), and only when the job
 * changed reads the newest events for the loss and any new messages.
 */
import type { FineTuningJob, FineTuningJobEvent } from '@lorafleet/contracts';
import { ApiConnectionError, type ConditionalResult, type RemoteClient } from './client';
import { eventLine, progressLine, type ProgressState } from './format';

export const TERMINAL_STATUSES = ['succeeded', 'failed', 'cancelled'] as const;

export function isTerminal(status: string): boolean {
  return (TERMINAL_STATUSES as readonly string[]).includes(status);
}

export interface WatchOptions {
  /** Poll period; default 1000 ms. */
  intervalMs?: number;
  /** Give up after this long (a `WatchTimeoutError`); default never. */
  timeoutMs?: number;
  /** Keep retrying connection errors for this long before giving up; default 15 s. */
  connectionGraceMs?: number;
  /** Called after every poll that changed something. */
  onUpdate?: (state: ProgressState) => void;
  /** Called once per new non-metrics event (status changes, messages), oldest first. */
  onEvent?: (event: FineTuningJobEvent) => void;
  /** Stop early (Ctrl-C). */
  signal?: AbortSignal;
}

export class WatchTimeoutError extends Error {
  override readonly name = 'WatchTimeoutError';
}

const eventNumber = (id: string): number => Number(id.replace(/^ftevent-/, ''));
const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });

/** Resolves with the job in its terminal status. */
export async function watchJob(
  client: RemoteClient,
  jobId: string,
  options: WatchOptions = {},
): Promise<FineTuningJob> {
  const interval = options.intervalMs ?? 1000;
  const grace = options.connectionGraceMs ?? 15_000;
  const started = Date.now();
  const path = `/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}`;
  let etag: string | null = null;
  let job: FineTuningJob | undefined;
  let loss: number | null = null;
  let validLoss: number | null = null;
  let lastEventSeen = -1;
  let failingSince: number | null = null;

  const readNewEvents = async (): Promise<void> => {
    // Events come newest first; page back until we reach what we have already seen.
    const fresh: FineTuningJobEvent[] = [];
    let after: string | undefined;
    for (let page = 0; page < 5; page++) {
      const list = await client.json<{ data: FineTuningJobEvent[]; has_more: boolean }>(
        'GET',
        `${path}/events`,
        { query: { limit: 100, after } },
      );
      const unseen = list.data.filter((e) => eventNumber(e.id) > lastEventSeen);
      fresh.push(...unseen);
      if (!list.has_more || unseen.length < list.data.length || list.data.length === 0) break;
      after = list.data[list.data.length - 1].id;
    }
    if (fresh.length === 0) return;
    fresh.sort((a, b) => eventNumber(a.id) - eventNumber(b.id));
    lastEventSeen = eventNumber(fresh[fresh.length - 1].id);
    for (const event of fresh) {
      const data = event.data ?? {};
      if (event.type === 'metrics') {
        if (typeof data.train_loss === 'number') loss = data.train_loss;
        if (typeof data.valid_loss === 'number') validLoss = data.valid_loss;
      } else {
        options.onEvent?.(event);
      }
    }
  };

  for (;;) {
    if (options.signal?.aborted) throw new Error('interrupted');
    try {
      const result: ConditionalResult<FineTuningJob> = await client.conditional<FineTuningJob>(
        path,
        etag,
      );
      failingSince = null;
      if (!result.notModified && result.body) {
        const current = result.body;
        job = current;
        etag = result.etag;
        await readNewEvents();
        options.onUpdate?.({
          job: current,
          loss,
          validLoss,
          elapsedSeconds: (Date.now() - started) / 1000,
          nowSeconds: Date.now() / 1000,
        });
        if (isTerminal(current.status)) return current;
      } else if (job) {
        options.onUpdate?.({
          job,
          loss,
          validLoss,
          elapsedSeconds: (Date.now() - started) / 1000,
          nowSeconds: Date.now() / 1000,
        });
      }
    } catch (error) {
      if (!(error instanceof ApiConnectionError)) throw error;
      failingSince ??= Date.now();
      if (Date.now() - failingSince >= grace) throw error;
    }
    if (options.timeoutMs !== undefined && Date.now() - started > options.timeoutMs) {
      throw new WatchTimeoutError(
        `job ${jobId} is still ${job?.status ?? 'unknown'} after ${Math.round(options.timeoutMs / 1000)} s`,
      );
    }
    await sleep(interval, options.signal);
  }
}

/** Where progress goes: a TTY gets one line redrawn in place, anything else a line per change. */
export interface ProgressSink {
  write(text: string): void;
  isTTY?: boolean;
}

/**
 * Renders watch updates. On a TTY the bar is redrawn with `\r`; otherwise it prints a line
 * whenever the step or status changes, at most every `minLineIntervalMs` (default 5 s), so
 * logs stay readable.
 */
export class ProgressPrinter {
  private lastLine = '';
  private lastKey = '';
  private lastPrinted = 0;
  private open = false;

  constructor(
    private readonly sink: ProgressSink,
    private readonly minLineIntervalMs = 5000,
  ) {}

  update(state: ProgressState): void {
    const line = progressLine(state);
    if (this.sink.isTTY) {
      if (line === this.lastLine) return;
      const pad = Math.max(0, this.lastLine.length - line.length);
      this.sink.write(`\r${line}${' '.repeat(pad)}`);
      this.lastLine = line;
      this.open = true;
      return;
    }
    const key = `${state.job.status}:${state.job.progress.step}`;
    const now = Date.now();
    const statusChanged = key.split(':')[0] !== this.lastKey.split(':')[0];
    if (key === this.lastKey) return;
    if (!statusChanged && now - this.lastPrinted < this.minLineIntervalMs) return;
    this.sink.write(`${line}\n`);
    this.lastKey = key;
    this.lastPrinted = now;
  }

  event(event: FineTuningJobEvent): void {
    this.breakLine();
    this.sink.write(`${eventLine(event)}\n`);
    if (this.sink.isTTY && this.lastLine) {
      this.sink.write(this.lastLine);
      this.open = true;
    }
  }

  /** Ends the in-place line (call before printing anything else). */
  breakLine(): void {
    if (this.open) {
      this.sink.write('\n');
      this.open = false;
    }
  }
}
