import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type {
  ChildToParent,
  ParentToChild,
  TrainerProgress,
  TrainerResult,
  TrainerSpec,
} from './trainer-protocol';

export class TrainerFailedError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
    this.name = 'TrainerFailedError';
  }
}

export interface TrainerHandlers {
  onReady?(backend: string): void;
  onPreflight?(summary: Record<string, number>): void;
  onProgress?(progress: TrainerProgress): void;
}

/**
 * One training run in a forked child process. `result` settles when the child reports a
 * result or dies; `kill()` ends it at once (cancel, lost lease, shutdown).
 */
export class TrainerProcess {
  readonly result: Promise<TrainerResult>;
  private readonly child: ChildProcess;
  private killedReason: string | undefined;

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
        switch (message.kind) {
          case 'ready':
            handlers.onReady?.(message.backend);
            break;
          case 'preflight':
            handlers.onPreflight?.(message.summary);
            break;
          case 'progress':
            handlers.onProgress?.(message.progress);
            break;
          case 'result':
            settle(() => resolve(message.result));
            break;
          case 'error':
            settle(() => reject(new TrainerFailedError(message.message, message.retryable)));
            break;
        }
      });
      this.child.on('error', (error) =>
        settle(() => reject(new TrainerFailedError(error.message, true))),
      );
      this.child.on('exit', (code, signal) =>
        settle(() =>
          reject(
            new TrainerFailedError(
              this.killedReason ??
                `trainer process exited (code ${code ?? 'none'}, signal ${signal ?? 'none'})`,
              this.killedReason === undefined,
            ),
          ),
        ),
      );
    });
    this.send({ kind: 'start', spec });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  kill(reason: string): void {
    this.killedReason ??= reason;
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }

  private send(message: ParentToChild): void {
    this.child.send(message);
  }
}
