import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { freePort } from '@lorafleet/db';
export { freePort };

export const REPO_ROOT = path.resolve(__dirname, '../../..');

/** A built app (`apps/<name>/dist/main.js`) running as a real child process. */
export class AppProcess {
  readonly output: string[] = [];
  private readonly child: ChildProcess;
  private exited: Promise<number | null>;

  constructor(app: 'api' | 'worker', env: Record<string, string>) {
    this.child = spawn(process.execPath, [path.join(REPO_ROOT, `apps/${app}/dist/main.js`)], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const collect = (chunk: Buffer) => this.output.push(chunk.toString());
    this.child.stdout?.on('data', collect);
    this.child.stderr?.on('data', collect);
    this.exited = new Promise((resolve) => this.child.on('exit', (code) => resolve(code)));
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get hasExited(): boolean {
    return this.child.exitCode !== null || this.child.signalCode !== null;
  }

  /** Resolves with the exit code (null when killed by a signal). */
  waitForExit(): Promise<number | null> {
    return this.exited;
  }

  signal(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }

  /** Pids of this process's direct children (the trainer processes of a worker). */
  childPids(): number[] {
    if (!this.child.pid) return [];
    const result = spawnSync('ps', ['-o', 'pid=', '--ppid', String(this.child.pid)], {
      encoding: 'utf8',
    });
    return result.stdout
      .split('\n')
      .map((line) => Number(line.trim()))
      .filter((pid) => pid > 0);
  }

  async stop(): Promise<void> {
    if (this.hasExited) return;
    this.child.kill('SIGCONT'); // a test may have left it stopped
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(timer);
  }
}

export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs: number,
  intervalMs = 200,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  throw new Error(
    `timed out after ${timeoutMs} ms waiting for ${what}${lastError instanceof Error ? `: ${lastError.message}` : ''}`,
  );
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
