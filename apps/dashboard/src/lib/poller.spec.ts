import { Poller, backoffDelay, type Clock, type VisibilitySource } from './poller';

/** A manual clock: timers fire only when the test advances time. */
class FakeClock implements Clock {
  time = 0;
  private timers = new Map<number, { at: number; callback: () => void }>();
  private nextId = 1;

  setTimeout(callback: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.set(id, { at: this.time + ms, callback });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.timers.delete(handle as number);
  }
  now(): number {
    return this.time;
  }
  get pending(): number[] {
    return [...this.timers.values()].map((t) => t.at - this.time);
  }
  /** Advances time, firing due timers in order and letting promises settle between them. */
  async advance(ms: number): Promise<void> {
    const end = this.time + ms;
    for (;;) {
      const due = [...this.timers.entries()]
        .filter(([, t]) => t.at <= end)
        .sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.time = due[1].at;
      due[1].callback();
      await flush();
    }
    this.time = end;
    await flush();
  }
}

const flush = async () => {
  for (let i = 0; i < 10; i += 1) await Promise.resolve();
};

class FakeVisibility implements VisibilitySource {
  hidden = false;
  private listeners = new Set<() => void>();
  isHidden() {
    return this.hidden;
  }
  subscribe(listener: () => void) {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }
  set(hidden: boolean) {
    this.hidden = hidden;
    this.listeners.forEach((l) => l());
  }
}

class NetworkDown extends Error {}
class NotFound extends Error {}

/** `task` may answer synchronously (or throw); the poller always sees a promise. */
function setup(task: (signal: AbortSignal) => number | null | Promise<number | null>) {
  const clock = new FakeClock();
  const visibility = new FakeVisibility();
  const errors: { error: unknown; failures: number; retryInMs: number | null }[] = [];
  let recovered = 0;
  const poller = new Poller({
    task: (signal) => Promise.resolve().then(() => task(signal)),
    clock,
    visibility,
    isRetryable: (e) => e instanceof NetworkDown,
    onError: (error, info) => errors.push({ error, ...info }),
    onRecover: () => (recovered += 1),
    backoff: { initialMs: 1000, maxMs: 8000, factor: 2 },
  });
  return { clock, visibility, errors, poller, recovered: () => recovered };
}

describe('backoffDelay', () => {
  it('grows exponentially and caps', () => {
    const options = { initialMs: 1000, maxMs: 8000, factor: 2 };
    expect([1, 2, 3, 4, 5, 6].map((n) => backoffDelay(n, options))).toEqual([
      1000, 2000, 4000, 8000, 8000, 8000,
    ]);
  });
});

describe('Poller', () => {
  it('polls at once, then after the delay the task returns, until it returns null', async () => {
    let calls = 0;
    const { clock, poller } = setup(() => {
      calls += 1;
      return calls < 3 ? 2000 : null;
    });
    poller.start();
    await clock.advance(0);
    expect(calls).toBe(1);
    await clock.advance(1999);
    expect(calls).toBe(1);
    await clock.advance(1);
    expect(calls).toBe(2);
    await clock.advance(2000);
    expect(calls).toBe(3);
    await clock.advance(60_000);
    expect(calls).toBe(3); // a finished job stops polling
    expect(poller.state).toBe('idle');
  });

  it('retries retryable failures with backoff, reports them, and reports recovery once', async () => {
    let calls = 0;
    const { clock, poller, errors, recovered } = setup(() => {
      calls += 1;
      if (calls >= 2 && calls <= 4) throw new NetworkDown('offline');
      return 2000;
    });
    poller.start();
    await clock.advance(0); // ok
    await clock.advance(2000); // fails → retry in 1 s
    expect(errors.map((e) => e.retryInMs)).toEqual([1000]);
    await clock.advance(1000); // fails → 2 s
    await clock.advance(2000); // fails → 4 s
    expect(errors.map((e) => e.retryInMs)).toEqual([1000, 2000, 4000]);
    expect(errors.map((e) => e.failures)).toEqual([1, 2, 3]);
    expect(recovered()).toBe(0);
    await clock.advance(3999);
    expect(calls).toBe(4);
    await clock.advance(1); // succeeds
    expect(calls).toBe(5);
    expect(recovered()).toBe(1);
    expect(poller.consecutiveFailures).toBe(0);
    expect(clock.pending).toEqual([2000]); // back to the normal cadence
  });

  it('stops on a non-retryable failure and says so', async () => {
    const { clock, poller, errors } = setup(() => {
      throw new NotFound('no such job');
    });
    poller.start();
    await clock.advance(0);
    expect(errors).toHaveLength(1);
    expect(errors[0].retryInMs).toBeNull();
    expect(poller.state).toBe('stopped');
    expect(clock.pending).toEqual([]);
  });

  it('schedules nothing while the page is hidden and polls as soon as it shows', async () => {
    let calls = 0;
    const { clock, visibility, poller } = setup(() => {
      calls += 1;
      return 2000;
    });
    poller.start();
    await clock.advance(0);
    expect(calls).toBe(1);
    visibility.set(true);
    expect(clock.pending).toEqual([]);
    expect(poller.state).toBe('hidden');
    await clock.advance(60_000);
    expect(calls).toBe(1);
    visibility.set(false);
    await clock.advance(0);
    expect(calls).toBe(2);
    expect(clock.pending).toEqual([2000]);
  });

  it('does not start polling in a hidden page', async () => {
    let calls = 0;
    const { clock, visibility, poller } = setup(() => {
      calls += 1;
      return 2000;
    });
    visibility.hidden = true;
    poller.start();
    await clock.advance(10_000);
    expect(calls).toBe(0);
    visibility.set(false);
    await clock.advance(0);
    expect(calls).toBe(1);
  });

  it('a poll that finishes while hidden waits for the page to show', async () => {
    let release: (value: number) => void = () => undefined;
    let calls = 0;
    const { clock, visibility, poller } = setup(
      () =>
        new Promise<number>((resolve) => {
          calls += 1;
          release = resolve;
        }),
    );
    poller.start();
    await clock.advance(0);
    visibility.set(true);
    release(2000);
    await clock.advance(10_000);
    expect(calls).toBe(1);
    visibility.set(false);
    await clock.advance(0);
    expect(calls).toBe(2);
  });

  it('stop() aborts the request in flight and cancels the timer', async () => {
    let seen: AbortSignal | null = null;
    const { clock, poller } = setup(
      (signal) =>
        new Promise<number>((_resolve, reject) => {
          seen = signal;
          signal.addEventListener('abort', () =>
            reject(Object.assign(new Error('aborted'), { name: 'AbortError' })),
          );
        }),
    );
    poller.start();
    await clock.advance(0);
    expect(seen!.aborted).toBe(false);
    poller.stop();
    expect(seen!.aborted).toBe(true);
    await clock.advance(10_000);
    expect(poller.state).toBe('stopped');
  });

  it('pollNow() polls at once, also after the task stopped the loop', async () => {
    let calls = 0;
    const { clock, poller } = setup(() => {
      calls += 1;
      return calls === 1 ? null : 5000;
    });
    poller.start();
    await clock.advance(0);
    expect(calls).toBe(1);
    poller.pollNow();
    await clock.advance(0);
    expect(calls).toBe(2);
    poller.pollNow(); // cuts the 5 s wait short
    await clock.advance(0);
    expect(calls).toBe(3);
  });
});
