/**
 * Framework-free polling loop used by every live view.
 *
 * - `task` runs one poll and resolves to the delay before the next one, or `null` to stop
 *   (a finished job stops polling).
 * - A retryable failure (network, 5xx) retries with exponential backoff and reports it, so the
 *   page can show a banner; the first success afterwards reports recovery.
 * - A non-retryable failure (a 4xx: not found, forbidden) stops the loop.
 * - While the document is hidden nothing is scheduled; becoming visible polls at once.
 * - `stop()` cancels the timer and aborts the request in flight.
 */

export interface VisibilitySource {
  isHidden(): boolean;
  /** Subscribes to visibility changes; returns an unsubscribe function. */
  subscribe(listener: () => void): () => void;
}

export interface Clock {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  now(): number;
}

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  factor: number;
}

export interface PollerOptions {
  task: (signal: AbortSignal) => Promise<number | null>;
  isRetryable: (error: unknown) => boolean;
  onError?: (error: unknown, info: { failures: number; retryInMs: number | null }) => void;
  onRecover?: () => void;
  backoff?: Partial<BackoffOptions>;
  visibility?: VisibilitySource;
  clock?: Clock;
}

export type PollerState = 'idle' | 'running' | 'waiting' | 'hidden' | 'stopped';

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 1000, maxMs: 30_000, factor: 2 };

/** Delay before retry number `failures` (1-based): initial·factor^(n−1), capped. */
export function backoffDelay(failures: number, options: BackoffOptions = DEFAULT_BACKOFF): number {
  const exponent = Math.max(0, failures - 1);
  return Math.min(options.maxMs, Math.round(options.initialMs * options.factor ** exponent));
}

export const documentVisibility = (doc: Document): VisibilitySource => ({
  isHidden: () => doc.visibilityState === 'hidden',
  subscribe(listener) {
    doc.addEventListener('visibilitychange', listener);
    return () => doc.removeEventListener('visibilitychange', listener);
  },
});

const alwaysVisible: VisibilitySource = { isHidden: () => false, subscribe: () => () => undefined };

const realClock: Clock = {
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof setTimeout>),
  now: () => Date.now(),
};

export class Poller {
  private timer: unknown = null;
  private inFlight: AbortController | null = null;
  private stopped = false;
  private started = false;
  /** A poll is due but the page is hidden: run it when the page shows again. */
  private dueWhenVisible = false;
  private failures = 0;
  private unsubscribe: (() => void) | null = null;
  private readonly backoff: BackoffOptions;
  private readonly visibility: VisibilitySource;
  private readonly clock: Clock;

  constructor(private readonly options: PollerOptions) {
    this.backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.visibility = options.visibility ?? alwaysVisible;
    this.clock = options.clock ?? realClock;
  }

  get state(): PollerState {
    if (this.stopped) return 'stopped';
    if (this.inFlight) return 'running';
    if (this.timer !== null) return 'waiting';
    if (this.dueWhenVisible) return 'hidden';
    return 'idle';
  }

  get consecutiveFailures(): number {
    return this.failures;
  }

  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    this.unsubscribe = this.visibility.subscribe(() => this.onVisibilityChange());
    this.schedule(0);
  }

  /** Polls now (e.g. after the user acted), whatever was scheduled; restarts a stopped-by-task loop. */
  pollNow(): void {
    if (!this.started) return this.start();
    if (this.stopped || this.inFlight) return;
    this.clearTimer();
    this.schedule(0);
  }

  stop(): void {
    this.stopped = true;
    this.clearTimer();
    this.dueWhenVisible = false;
    this.inFlight?.abort();
    this.inFlight = null;
    this.unsubscribe?.();
    this.unsubscribe = null;
  }

  private clearTimer(): void {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    if (this.visibility.isHidden()) {
      this.dueWhenVisible = true;
      return;
    }
    this.dueWhenVisible = false;
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      void this.run();
    }, delayMs);
  }

  private onVisibilityChange(): void {
    if (this.stopped) return;
    if (this.visibility.isHidden()) {
      // Do not wake up a hidden tab: drop the timer and remember that a poll is owed.
      if (this.timer !== null) {
        this.clearTimer();
        this.dueWhenVisible = true;
      }
      return;
    }
    if (this.dueWhenVisible && !this.inFlight) this.schedule(0);
  }

  private async run(): Promise<void> {
    if (this.stopped || this.inFlight) return;
    const controller = new AbortController();
    this.inFlight = controller;
    let next: number | null;
    try {
      next = await this.options.task(controller.signal);
    } catch (error) {
      if (this.inFlight !== controller || this.stopped) return; // stopped meanwhile: stay quiet
      this.inFlight = null;
      if (!this.options.isRetryable(error)) {
        this.options.onError?.(error, { failures: this.failures + 1, retryInMs: null });
        this.stop();
        return;
      }
      this.failures += 1;
      const retryInMs = backoffDelay(this.failures, this.backoff);
      this.options.onError?.(error, { failures: this.failures, retryInMs });
      this.schedule(retryInMs);
      return;
    }
    if (this.inFlight !== controller || this.stopped) return;
    this.inFlight = null;
    if (this.failures > 0) {
      this.failures = 0;
      this.options.onRecover?.();
    }
    if (next === null) {
      // The task is done (a terminal job); keep the subscription so pollNow() can restart it.
      return;
    }
    this.schedule(next);
  }
}
