import { fork } from 'node:child_process';
import path from 'node:path';
import type { ChildToParent } from './trainer-protocol';

export interface ProbedTrainer {
  /** The backend tfjs reports. */
  backend: string;
  /** LORAFLEET_MEMORY_LIMIT_MB as the trainer resolves it (or its cgroup/RAM default), MiB. */
  memoryLimitMb: number | null;
}

/**
 * Starts a throwaway trainer child that only initialises LORAFLEET_BACKEND, so the worker
 * refuses to start when its backend cannot load (R17) without loading tfjs in the parent.
 * Resolves to the backend and memory limit the child reports; rejects with its reason.
 */
export function probeBackend(requested: string, timeoutMs = 60_000): Promise<ProbedTrainer> {
  return new Promise((resolve, reject) => {
    const child = fork(path.join(__dirname, 'trainer-child.js'), [], {
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`backend "${requested}" did not initialise within ${timeoutMs} ms`));
    }, timeoutMs);
    let answer: ChildToParent | undefined;
    child.on('message', (message: ChildToParent) => (answer = message));
    child.on('exit', () => {
      clearTimeout(timer);
      if (answer?.kind === 'ready') {
        resolve({ backend: answer.backend, memoryLimitMb: answer.memoryLimitMb ?? null });
      } else if (answer?.kind === 'error') reject(new Error(answer.failure.message));
      else reject(new Error(`backend probe for "${requested}" exited without an answer`));
    });
    child.send({ kind: 'probe', backend: requested });
  });
}
