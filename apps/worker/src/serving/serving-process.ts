import type { ServeReply, ServeRequest } from '@lorafleet/contracts';
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type {
  AdapterAnswer,
  ParentToServingChild,
  ServingChildSpec,
  ServingChildToParent,
} from './serving-protocol';

export interface ServingProcessHandlers {
  /** Fetches an adapter from Postgres for the child. */
  adapter(adapterId: string): Promise<AdapterAnswer>;
  /** Replies of one round, in order; a request ends with its `done` or `error`. */
  replies(replies: { requestId: string; reply: ServeReply }[]): void;
  /** The child is gone (crash, failed load, kill); its unfinished requests were failed first. */
  exited(reason: string): void;
}

/**
 * One serving child for one base model (issue 19). Started on the base's first request; the
 * child loads the model on `init`, so a worker that never serves a base never loads it.
 * Requests the child holds when it dies are answered here with an error, so their clients
 * hear at once instead of waiting for the API's deadline.
 */
export class ServingProcess {
  private readonly child: ChildProcess;
  private readonly unfinished = new Set<string>();
  private exitReason: string | undefined;
  private ended = false;

  constructor(
    spec: ServingChildSpec,
    private readonly handlers: ServingProcessHandlers,
    entry = path.join(__dirname, 'serving-child.js'),
  ) {
    this.child = fork(entry, [], {
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: process.env,
    });
    this.child.on('message', (message: ServingChildToParent) => this.onMessage(message));
    this.child.on('error', (error) => this.end(`serving process failed: ${error.message}`));
    this.child.on('exit', (code, signal) =>
      this.end(
        this.exitReason ??
          `the serving process for "${spec.baseModel}" exited (code ${code ?? 'none'}, signal ${signal ?? 'none'})`,
      ),
    );
    this.send({ kind: 'init', spec });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Requests sent and not yet ended. */
  get load(): number {
    return this.unfinished.size;
  }

  submit(request: ServeRequest): void {
    this.unfinished.add(request.requestId);
    this.send({ kind: 'request', request });
  }

  cancel(requestId: string): void {
    this.send({ kind: 'cancel', requestId });
  }

  kill(reason: string): void {
    this.exitReason ??= reason;
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }

  private onMessage(message: ServingChildToParent): void {
    switch (message.kind) {
      case 'ready':
        break;
      case 'init-failed':
        this.exitReason ??= `the base model could not be loaded: ${message.message}`;
        break;
      case 'need-adapter':
        void this.handlers
          .adapter(message.adapterId)
          .catch((error: unknown) => ({
            adapterId: message.adapterId,
            missing: `adapter ${message.adapterId} could not be read: ${error instanceof Error ? error.message : String(error)}`,
          }))
          .then((answer) => this.send({ kind: 'adapter', answer }));
        break;
      case 'replies':
        for (const { requestId, reply } of message.replies) {
          if (reply.kind !== 'delta') this.unfinished.delete(requestId);
        }
        this.handlers.replies(message.replies);
        break;
    }
  }

  private end(reason: string): void {
    if (this.ended) return;
    this.ended = true;
    const failed = [...this.unfinished].map((requestId) => ({
      requestId,
      reply: { kind: 'error', code: 'service_unavailable', message: reason, param: null } as const,
    }));
    this.unfinished.clear();
    if (failed.length > 0) this.handlers.replies(failed);
    this.handlers.exited(reason);
  }

  private send(message: ParentToServingChild): void {
    if (this.child.connected) this.child.send(message);
  }
}
