import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from './repo-root';

/**
 * Where spawned processes mirror their output. `npm test` (tools/scripts/run-tests.mjs) sets
 * it per suite and prints the tail of every file when the suite fails, so a CI failure shows
 * what the api and workers logged, not only the test's own assertion.
 */
export const TEST_LOG_DIR_ENV = 'LORAFLEET_TEST_LOG_DIR';

/**
 * A Node script running as a real child process (so tests can SIGKILL, SIGSTOP and SIGTERM
 * it), its stdout and stderr kept in memory and, when LORAFLEET_TEST_LOG_DIR is set, appended
 * to `<dir>/<name>-<pid>.log`.
 */
export class NodeProcess {
  readonly output: string[] = [];
  /** The log file this process's output is mirrored to, if any. */
  readonly logFile: string | null;
  private readonly child: ChildProcess;
  private readonly exited: Promise<number | null>;

  constructor(name: string, script: string, env: Record<string, string>, args: string[] = []) {
    this.child = spawn(process.execPath, [script, ...args], {
      cwd: REPO_ROOT,
      // NO_COLOR: Nest's logger would otherwise write ANSI colours into the log files.
      env: { ...process.env, NO_COLOR: '1', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const logDir = process.env[TEST_LOG_DIR_ENV];
    this.logFile = logDir
      ? path.join(logDir, `${name}-${this.child.pid ?? 'unstarted'}.log`)
      : null;
    if (logDir) mkdirSync(logDir, { recursive: true });
    const collect = (chunk: Buffer) => {
      this.output.push(chunk.toString());
      if (this.logFile) appendFileSync(this.logFile, chunk);
    };
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

  /** Everything the process printed so far. */
  get text(): string {
    return this.output.join('');
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

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  async stop(graceMs = 5000): Promise<void> {
    if (this.hasExited) return;
    this.child.kill('SIGCONT'); // a test may have left it stopped
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

/** A built app (`apps/<name>/dist/main.js`; `npm test` builds them first) as a child process. */
export class AppProcess extends NodeProcess {
  constructor(app: 'api' | 'worker', env: Record<string, string>) {
    super(app, path.join(REPO_ROOT, `apps/${app}/dist/main.js`), env);
  }
}
