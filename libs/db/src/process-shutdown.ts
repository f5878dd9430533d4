/**
 * The part of the shutdown grace kept for the last steps (handing jobs back, closing
 * Postgres) after whatever is still running has been cut: a fifth, at most 5 s.
 */
export function shutdownReserveMs(graceMs: number): number {
  return Math.min(Math.round(graceMs / 5), 5000);
}

/** The levels the shutdown messages use; Nest's `Logger` fits. */
export interface ShutdownLogger {
  log(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export interface ShutdownOnSignalsOptions {
  /** LORAFLEET_SHUTDOWN_GRACE_MS: the process is gone this long after the first signal. */
  graceMs: number;
  /** The orderly shutdown (Nest's `app.close()`: drain, then the shutdown hooks). */
  close: () => Promise<void>;
  /**
   * Cuts what the orderly shutdown may still be waiting on (open HTTP connections, Redis
   * connections whose QUIT cannot be answered), so the hooks after it (Postgres) still run
   * inside the grace. Called once the grace minus `reserveMs` is spent.
   */
  forceClose?: () => void;
  /** Time kept after `forceClose` for the rest of the shutdown; default `shutdownReserveMs`. */
  reserveMs?: number;
  logger: ShutdownLogger;
  /** For tests; default `process.exit`. */
  exit?: (code: number) => void;
}

/**
 * SIGTERM and SIGINT run `close` under a deadline of `graceMs` (issue 14, items 13–14). Nest's
 * `enableShutdownHooks` waits for its hooks without a limit, so one connection that never
 * finishes (a client that sent half a body, a Redis that does not answer QUIT) kept processes
 * alive for minutes after SIGTERM. Here:
 * - `close` finishing on its own exits 0;
 * - at `graceMs - reserveMs` whatever it still waits on is cut with `forceClose`, and the
 *   exit status becomes 1 (the shutdown was not clean);
 * - at `graceMs` the process exits 1 whatever is still pending.
 * A second signal exits 1 at once (an operator pressing Ctrl-C twice).
 */
export function shutdownOnSignals(options: ShutdownOnSignalsOptions): void {
  const exit = options.exit ?? ((code: number) => process.exit(code));
  const { graceMs, logger } = options;
  const reserveMs = Math.min(options.reserveMs ?? shutdownReserveMs(graceMs), graceMs);
  let stopping = false;
  let forced = false;

  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn(`${signal} again during shutdown: exiting now`);
      exit(1);
      return;
    }
    stopping = true;
    const started = Date.now();
    logger.log(`${signal}: shutting down, at most ${graceMs} ms (LORAFLEET_SHUTDOWN_GRACE_MS)`);
    const forceTimer = options.forceClose
      ? setTimeout(() => {
          forced = true;
          logger.warn(
            `shutdown still waiting after ${Date.now() - started} ms: closing open connections`,
          );
          try {
            options.forceClose?.();
          } catch (error) {
            logger.error(`forced close failed: ${(error as Error).message}`);
          }
        }, graceMs - reserveMs)
      : undefined;
    // Not unref'd: while `close` waits on something that holds no handle of its own, this
    // timer is what keeps the process alive long enough to exit with the right status.
    const deadline = setTimeout(() => {
      logger.error(
        `shutdown not finished after ${graceMs} ms (LORAFLEET_SHUTDOWN_GRACE_MS); exiting with status 1`,
      );
      exit(1);
    }, graceMs);
    options.close().then(
      () => {
        clearTimeout(forceTimer);
        clearTimeout(deadline);
        logger.log(`shut down in ${Date.now() - started} ms`);
        exit(forced ? 1 : 0);
      },
      (error: unknown) => {
        clearTimeout(forceTimer);
        clearTimeout(deadline);
        logger.error(`shutdown failed: ${error instanceof Error ? error.message : String(error)}`);
        exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}
