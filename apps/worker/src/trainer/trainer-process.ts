import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type {
  ChildToParent,
  ParentToChild,
  StopReason,
  TrainerCheckpoint,
  TrainerProgress,
  TrainerResult,
  TrainerSpec,
} from './trainer-protocol';

/** How a trainer run ended, when it did not produce a result. */
export class TrainerFailedError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
    this.name = 'TrainerFailedError';
  }
}

/** The trainer was killed on purpose (cancel, lost lease, watchdog); not a crash. */
export class TrainerKilledError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'TrainerKilledError';
  }
}

export class TrainerStoppedError extends Error {
  constructor(readonly reason: StopReason) {
    super(`trainer stopped for ${reason}`);
    this.name = 'TrainerStoppedError';
  }
}

export interface TrainerHandlers {
  onReady?(backend: string, resumedFromStep: number | null): void;
  onPreflight?(summary: Record<string, number>): void;
  onProgress?(progress: TrainerProgress): void;
  onEval?(step: number, metrics: Record<string, number>): void;
  /**
   * Awaited one at a time, so a `stopped` or `result` that follows a checkpoint settles after
   * it is stored. A checkpoint that arrives during a write may replace one still waiting.
   */
  onCheckpoint?(checkpoint: TrainerCheckpoint): Promise<void>;
}

/**
 * One training run in a forked child process. `result` settles when the child reports a
 * result, stops, or dies; `kill()` ends it at once. Every message counts as a sign of life for
 * the watchdog (R10).
 */
export class TrainerProcess {
  readonly result: Promise<TrainerResult>;
  private readonly child: ChildProcess;
  private killedReason: string | undefined;
  private lastSignOfLife = Date.now();
  /**
   * Checkpoint storage. The child does not wait for a checkpoint to be stored, so while a
   * write is slow (a Postgres outage under retry, R24) newer checkpoints arrive: only the
   * newest waiting one is kept, since resume uses the newest and older ones would be pruned
   * anyway. Memory stays at one write plus one waiting blob, and a stop waits for at most two
   * writes. `checkpointsWritten` settles once nothing is waiting or being written.
   */
  private waitingCheckpoint: TrainerCheckpoint | null = null;
  private checkpointsWritten: Promise<void> = Promise.resolve();
  private writingCheckpoints = false;
  private supersededCheckpoints = 0;
  /** The first failed checkpoint write; the run then ends with it instead of its result. */
  private checkpointError: Error | undefined;

  constructor(
    spec: TrainerSpec,
    handlers: TrainerHandlers,
    entry = path.join(__dirname, 'trainer-child.js'),
  ) {
    this.child = fork(entry, [], {
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: process.env,
    });
    this.result = new Promise<TrainerResult>((resolve, reject) => {
      let settled = false;
      const settle = (fn: () => void) => {
        if (!settled) {
          settled = true;
          fn();
        }
      };
      this.child.on('message', (message: ChildToParent) => {
        this.lastSignOfLife = Date.now();
        switch (message.kind) {
          case 'ready':
            handlers.onReady?.(message.backend, message.resumedFromStep);
            break;
          case 'preflight':
            handlers.onPreflight?.(message.summary);
            break;
          case 'progress':
            handlers.onProgress?.(message.progress);
            break;
          case 'eval':
            handlers.onEval?.(message.step, message.metrics);
            break;
          case 'checkpoint':
            this.queueCheckpoint(message.checkpoint, handlers);
            break;
          case 'stopped':
            void this.checkpointsWritten.then(() =>
              settle(() => reject(this.checkpointError ?? new TrainerStoppedError(message.reason))),
            );
            break;
          case 'result':
            void this.checkpointsWritten.then(() =>
              settle(() =>
                this.checkpointError ? reject(this.checkpointError) : resolve(message.result),
              ),
            );
            break;
          case 'error':
            settle(() => reject(new TrainerFailedError(message.message, message.retryable)));
            break;
        }
      });
      this.child.on('error', (error) =>
        settle(() => reject(new TrainerFailedError(error.message, true))),
      );
      this.child.on('exit', (code, signal) => {
        // A clean exit after `stopped`/`result` settles through the chain above.
        if (code === 0 && this.killedReason === undefined) return;
        settle(() =>
          reject(
            this.killedReason !== undefined
              ? new TrainerKilledError(this.killedReason)
              : new TrainerFailedError(
                  `trainer process exited (code ${code ?? 'none'}, signal ${signal ?? 'none'})`,
                  true,
                ),
          ),
        );
      });
    });
    this.send({ kind: 'start', spec });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Milliseconds since the child last said anything. */
  get silentForMs(): number {
    return Date.now() - this.lastSignOfLife;
  }

  /** Asks for a checkpoint and a clean stop at the next step boundary. */
  requestStop(reason: StopReason): void {
    this.send({ kind: 'stop', reason });
  }

  /** Checkpoints dropped because a newer one arrived before they could be stored. */
  get checkpointsSuperseded(): number {
    return this.supersededCheckpoints;
  }

  kill(reason: string): void {
    this.killedReason ??= reason;
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }

  private queueCheckpoint(checkpoint: TrainerCheckpoint, handlers: TrainerHandlers): void {
    if (this.waitingCheckpoint) this.supersededCheckpoints += 1;
    this.waitingCheckpoint = checkpoint;
    if (this.writingCheckpoints) return;
    this.writingCheckpoints = true;
    // Never rejects (nothing may be left unhandled); a failure is kept in checkpointError.
    this.checkpointsWritten = (async () => {
      while (this.waitingCheckpoint) {
        const next = this.waitingCheckpoint;
        this.waitingCheckpoint = null;
        try {
          await handlers.onCheckpoint?.(next);
        } catch (error) {
          this.checkpointError ??= error instanceof Error ? error : new Error(String(error));
        }
      }
      this.writingCheckpoints = false;
    })();
  }

  private send(message: ParentToChild): void {
    if (this.child.connected) this.child.send(message);
  }
}
