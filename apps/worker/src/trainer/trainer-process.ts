import { OUT_OF_MEMORY_TEXT, outOfMemoryMessage } from '@lorafleet/data';
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type {
  ChildToParent,
  ParentToChild,
  StopReason,
  TrainerCheckpoint,
  TrainerFailure,
  TrainerPreflight,
  TrainerProgress,
  TrainerResult,
  TrainerSpec,
} from './trainer-protocol';

/** How a trainer run ended, when it did not produce a result. */
export class TrainerFailedError extends Error {
  constructor(readonly failure: TrainerFailure) {
    super(failure.message);
    this.name = 'TrainerFailedError';
  }

  /** Only failures that may be transient are retried (R13, issue 14 item 11). */
  get retryable(): boolean {
    return this.failure.kind === 'retryable';
  }
}

/** Bytes of the child's stderr kept to tell how it died. */
const STDERR_TAIL_BYTES = 8192;

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
  onPreflight?(summary: TrainerPreflight): void;
  onWarning?(message: string, data: Record<string, number>): void;
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
  /** The end of the child's stderr: a wasm abort or V8 heap death prints only there. */
  private stderrTail = '';

  constructor(
    spec: TrainerSpec,
    handlers: TrainerHandlers,
    entry = path.join(__dirname, 'trainer-child.js'),
  ) {
    this.child = fork(entry, [], {
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
      env: process.env,
    });
    // Still the worker's stderr (logs), and the tail is kept for the exit diagnosis below.
    this.child.stderr?.on('data', (chunk: Buffer) => {
      process.stderr.write(chunk);
      this.stderrTail = (this.stderrTail + chunk.toString()).slice(-STDERR_TAIL_BYTES);
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
          case 'warning':
            handlers.onWarning?.(message.message, message.data);
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
            settle(() => reject(new TrainerFailedError(message.failure)));
            break;
        }
      });
      this.child.on('error', (error) =>
        settle(() =>
          reject(
            new TrainerFailedError({ kind: 'retryable', message: error.message, param: null }),
          ),
        ),
      );
      // 'close', not 'exit': it comes after stderr is drained, so the tail is complete.
      this.child.on('close', (code, signal) => {
        // A clean exit after `stopped`/`result` settles through the chain above.
        if (code === 0 && this.killedReason === undefined) return;
        settle(() =>
          reject(
            this.killedReason !== undefined
              ? new TrainerKilledError(this.killedReason)
              : new TrainerFailedError(this.exitFailure(code, signal)),
          ),
        );
      });
    });
    this.send({ kind: 'start', spec });
  }

  /**
   * A child that died without reporting an error. A wasm abort or a V8 heap exhaustion (exit
   * 134, SIGABRT) is memory running out: reported as such, never as the raw `Aborted()`
   * text, and not retried, since the same run on the same worker would die the same way.
   */
  private exitFailure(code: number | null, signal: NodeJS.Signals | null): TrainerFailure {
    if (code === 134 || signal === 'SIGABRT' || OUT_OF_MEMORY_TEXT.test(this.stderrTail)) {
      return {
        kind: 'out_of_memory',
        message: outOfMemoryMessage({ estimateMb: null, limitMb: null, advice: null }),
        param: null,
      };
    }
    return {
      kind: 'retryable',
      message: `trainer process exited (code ${code ?? 'none'}, signal ${signal ?? 'none'})`,
      param: null,
    };
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
