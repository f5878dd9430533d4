import { useEffect, useRef } from 'preact/hooks';
import { isRetryable } from '../lib/api-client';
import { Poller, documentVisibility } from '../lib/poller';
import { connection } from './connection';

export interface UsePollerOptions {
  /** No polling while false (e.g. nothing to poll yet). */
  enabled?: boolean;
  /** A non-retryable failure (4xx) stopped the loop. */
  onFatal?: (error: unknown) => void;
}

/**
 * Runs `task` in a Poller while the component is mounted and `deps` are unchanged. `task`
 * resolves to the delay before the next poll or null to stop. Retryable failures show the
 * connection banner and back off; the returned `pollNow` polls at once (after a user action).
 */
export function usePoller(
  task: (signal: AbortSignal) => Promise<number | null>,
  deps: readonly unknown[],
  options: UsePollerOptions = {},
): { pollNow: () => void } {
  const taskRef = useRef(task);
  taskRef.current = task;
  const fatalRef = useRef(options.onFatal);
  fatalRef.current = options.onFatal;
  const pollerRef = useRef<Poller | null>(null);
  const enabled = options.enabled ?? true;

  useEffect(() => {
    if (!enabled) return undefined;
    const owner = Symbol('poller');
    const poller = new Poller({
      task: (signal) => taskRef.current(signal),
      isRetryable,
      visibility: documentVisibility(document),
      onError: (error, { retryInMs }) => {
        if (retryInMs === null) {
          connection.clear(owner);
          fatalRef.current?.(error);
          return;
        }
        connection.report(owner, {
          message: error instanceof Error ? error.message : String(error),
          retryAt: Date.now() + retryInMs,
          retry: () => poller.pollNow(),
        });
      },
      onRecover: () => connection.clear(owner),
    });
    pollerRef.current = poller;
    poller.start();
    return () => {
      poller.stop();
      connection.clear(owner);
      if (pollerRef.current === poller) pollerRef.current = null;
    };
    // The caller names the deps; the task itself is read through a ref.
  }, [enabled, ...deps]);

  return { pollNow: () => pollerRef.current?.pollNow() };
}
