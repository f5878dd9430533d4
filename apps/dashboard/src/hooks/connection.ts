import { useEffect, useState } from 'preact/hooks';

/**
 * Which live views cannot reach the API right now. Each poller reports its own failure and
 * clears it on recovery; the banner shows while any is failing.
 */
export interface ConnectionFailure {
  message: string;
  /** When the next automatic retry happens (ms since epoch). */
  retryAt: number;
  retry: () => void;
}

const failures = new Map<symbol, ConnectionFailure>();
const listeners = new Set<() => void>();
const emit = () => listeners.forEach((listener) => listener());

export const connection = {
  report(owner: symbol, failure: ConnectionFailure): void {
    failures.set(owner, failure);
    emit();
  },
  clear(owner: symbol): void {
    if (failures.delete(owner)) emit();
  },
  retryAll(): void {
    for (const failure of [...failures.values()]) failure.retry();
  },
  current(): ConnectionFailure[] {
    return [...failures.values()];
  },
};

export function useConnectionFailures(): ConnectionFailure[] {
  const [current, setCurrent] = useState(() => connection.current());
  useEffect(() => {
    const update = () => setCurrent(connection.current());
    listeners.add(update);
    update();
    return () => void listeners.delete(update);
  }, []);
  return current;
}
