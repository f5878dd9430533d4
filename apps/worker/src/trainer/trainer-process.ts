import { OUT_OF_MEMORY_TEXT, outOfMemoryMessage } from '@lorafleet/data';
import { fork } from 'node:child_process';
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

/** Bytes of the child's stderr kept to tell how it died. */
const STDERR_TAIL_BYTES = 8192;

/** Why the parent killed a trainer on purpose (not a crash). */
export type KillReason =
  /** The job was cancelled (R11). */
  | 'cancelled'
  /** Another attempt holds the job now: the poll saw it, or a checkpoint was refused (R7). */
  | 'lease_lost'
  /** The child said nothing for LORAFLEET_WATCHDOG_MS (R10). */
  | 'watchdog'
  /** The shutdown grace ran out before the child checkpointed and stopped (R12). */
  | 'shutdown';

/**
 * How one trainer run ended: the one value that decides the attempt's fate. `outcome`
 * resolves to it and never rejects.
 */
export type TrainerOutcome =
  /** The child reported its result, and every checkpoint before it was stored. */
  | { kind: 'succeeded'; result: TrainerResult }
  /** The child checkpointed and stopped on request (pause or shutdown). */
  | { kind: 'stopped'; reason: StopReason }
  /** The parent killed the child on purpose. */
  | { kind: 'killed'; reason: KillReason }
  /**
   * A failure the child classified, a crash, or a checkpoint that could not be stored.
   * Only `failure.kind === 'retryable'` may be transient (R13, issue 14 item 11).
   */
  | { kind: 'failed'; failure: TrainerFailure };

/** One line for logs and errors. */
export function describeOutcome(outcome: TrainerOutcome): string {
  switch (outcome.kind) {
    case 'succeeded':
      return `succeeded after ${outcome.result.steps} steps on ${outcome.result.backend}`;
    case 'stopped':
      return `stopped for ${outcome.reason}`;
    case 'killed':
      return `killed (${outcome.reason})`;
    case 'failed':
      return `failed (${outcome.failure.kind}): ${outcome.failure.message}`;
  }
}

/** What a trainer child tells its parent, as the events of the process that runs it. */
export interface TrainerChildEvents {
  message(message: ChildToParent): void;
  /** The process could not be spawned, or a message could not be sent. */
  error(error: Error): void;
  /** The process is gone, its stderr drained: how it ended, and the end of that stderr. */
  exit(code: number | null, signal: NodeJS.Signals | null, stderrTail: string): void;
}

/** The trainer child as the parent drives it: a forked process, or a scripted stand-in. */
export interface TrainerChild {
  readonly pid: number | undefined;
  send(message: ParentToChild): void;
  /** SIGKILL, unless it has already exited. */
  kill(): void;
}

export type SpawnTrainerChild = (events: TrainerChildEvents) => TrainerChild;

/** Forks `entry` (the built trainer-child.js by default) with the advanced IPC serialization. */
export function forkTrainerChild(
  entry = path.join(__dirname, 'trainer-child.js'),
): SpawnTrainerChild {
  return (events) => {
    const child = fork(entry, [], {
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
      env: process.env,
    });
    let stderrTail = '';
    // Still the worker's stderr (logs), and the tail is kept for the exit diagnosis.
    child.stderr?.on('data', (chunk: Buffer) => {
      process.stderr.write(chunk);
      stderrTail = (stderrTail + chunk.toString()).slice(-STDERR_TAIL_BYTES);
    });
    child.on('message', (message: ChildToParent) => events.message(message));
    child.on('error', (error) => events.error(error));
    // 'close', not 'exit': it comes after stderr is drained, so the tail is complete.
    child.on('close', (code, signal) => events.exit(code, signal, stderrTail));
    return {
      get pid() {
        return child.pid;
      },
      send(message) {
        if (child.connected) child.send(message);
      },
      kill() {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      },
    };
  };
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
 * One training run in a trainer child (a forked process unless told otherwise). `outcome`
 * resolves when the child reports a result, stops, fails or dies; `kill()` ends it at once.
 * Every message counts as a sign of life for the watchdog (R10).
 */
export class TrainerProcess {
  /** How the run ended; never rejects. */
  readonly outcome: Promise<TrainerOutcome>;
  private readonly child: TrainerChild;
  private killedReason: KillReason | undefined;
  /** The child sent `stopped` or `result`: a clean exit after it is expected. */
  private reportedEnd = false;
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
    spawn: SpawnTrainerChild = forkTrainerChild(),
  ) {
    let settle!: (outcome: TrainerOutcome) => void;
    this.outcome = new Promise<TrainerOutcome>((resolve) => {
      let settled = false;
      settle = (outcome) => {
        if (settled) return;
        settled = true;
        resolve(outcome);
      };
    });
    const failed = (failure: TrainerFailure): TrainerOutcome => ({ kind: 'failed', failure });
    // A failed checkpoint write outranks what the child said after it.
    const afterCheckpoints = (outcome: TrainerOutcome) =>
      void this.checkpointsWritten.then(() =>
        settle(
          this.checkpointError
            ? failed({ kind: 'retryable', message: this.checkpointError.message, param: null })
            : outcome,
        ),
      );
    this.child = spawn({
      message: (message) => {
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
            this.reportedEnd = true;
            afterCheckpoints({ kind: 'stopped', reason: message.reason });
            break;
          case 'result':
            this.reportedEnd = true;
            afterCheckpoints({ kind: 'succeeded', result: message.result });
            break;
          case 'error':
            settle(failed(message.failure));
            break;
        }
      },
      error: (error) => settle(failed({ kind: 'retryable', message: error.message, param: null })),
      exit: (code, signal, stderrTail) => {
        if (this.killedReason !== undefined) {
          settle({ kind: 'killed', reason: this.killedReason });
          return;
        }
        // A clean exit after `stopped`/`result` settles through the checkpoint chain above.
        if (code === 0 && this.reportedEnd) return;
        settle(failed(exitFailure(code, signal, stderrTail)));
      },
    });
    this.child.send({ kind: 'start', spec });
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
    this.child.send({ kind: 'stop', reason });
  }

  /** Checkpoints dropped because a newer one arrived before they could be stored. */
  get checkpointsSuperseded(): number {
    return this.supersededCheckpoints;
  }

  /** Kills the child at once; the run ends `killed` with the first reason given. */
  kill(reason: KillReason): void {
    this.killedReason ??= reason;
    this.child.kill();
  }

  /** Kills a child still running once its outcome has been handled. */
  dispose(): void {
    this.child.kill();
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
}

/**
 * A child that died without reporting an error. A wasm abort or a V8 heap exhaustion (exit
 * 134, SIGABRT) is memory running out: reported as such, never as the raw `Aborted()`
 * text, and not retried, since the same run on the same worker would die the same way.
 */
function exitFailure(
  code: number | null,
  signal: NodeJS.Signals | null,
  stderrTail: string,
): TrainerFailure {
  if (code === 134 || signal === 'SIGABRT' || OUT_OF_MEMORY_TEXT.test(stderrTail)) {
    return {
      kind: 'out_of_memory',
      message: outOfMemoryMessage({ estimateMb: null, limitMb: null, advice: null }),
      param: null,
    };
  }
  return {
    kind: 'retryable',
    message:
      code === 0
        ? 'trainer process exited without a result'
        : `trainer process exited (code ${code ?? 'none'}, signal ${signal ?? 'none'})`,
    param: null,
  };
}
