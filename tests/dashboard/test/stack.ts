/**
 * The real stack for the browser tests: a scratch Postgres database with migrations, tenants
 * and keys, the built API (serving the built dashboard) and a real worker as child processes,
 * sharing Redis under a unique queue prefix. Same pattern as tests/e2e.
 */
import {
  TenantsRepository,
  createDataSource,
  createScratchDatabase,
  runMigrations,
  type ScratchDatabase,
} from '@lorafleet/db';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import type { DataSource } from 'typeorm';
import { freePort } from '@lorafleet/db';

export const REPO_ROOT = path.resolve(__dirname, '../../..');
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

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
  const cause = lastError instanceof Error ? `: ${lastError.message}` : '';
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${cause}`);
}

/** A built app (`apps/<name>/dist/main.js`) as a child process, its output kept for failures. */
class AppProcess {
  readonly output: string[] = [];
  private readonly child: ChildProcess;
  private readonly exited: Promise<void>;

  constructor(app: 'api' | 'worker', env: Record<string, string>) {
    this.child = spawn(process.execPath, [path.join(REPO_ROOT, `apps/${app}/dist/main.js`)], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const logDir = process.env.LORAFLEET_TEST_LOG_DIR;
    const logFile = logDir ? path.join(logDir, `${app}-${this.child.pid ?? 'x'}.log`) : null;
    if (logDir) mkdirSync(logDir, { recursive: true });
    const collect = (chunk: Buffer) => {
      this.output.push(chunk.toString());
      if (logFile) appendFileSync(logFile, chunk);
    };
    this.child.stdout?.on('data', collect);
    this.child.stderr?.on('data', collect);
    this.exited = new Promise((resolve) => this.child.on('exit', () => resolve()));
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(timer);
  }
}

/**
 * `npm test` builds every project first; a direct `jest` run may not have, so build the
 * dashboard when its output is missing (a few seconds) and insist on the API and worker builds.
 */
export function ensureBuilt(): void {
  if (!existsSync(path.join(REPO_ROOT, 'apps/dashboard/dist/index.html'))) {
    const result = spawnSync(
      process.execPath,
      [
        path.join(REPO_ROOT, 'node_modules/vite/bin/vite.js'),
        'build',
        '--config',
        'apps/dashboard/vite.config.mts',
        '--logLevel',
        'warn',
      ],
      { cwd: REPO_ROOT, stdio: 'inherit' },
    );
    if (result.status !== 0) throw new Error('building the dashboard failed');
  }
  for (const app of ['api', 'worker']) {
    if (!existsSync(path.join(REPO_ROOT, `apps/${app}/dist/main.js`))) {
      throw new Error(
        `apps/${app}/dist/main.js is missing: run \`npx nx run-many -t build\` first`,
      );
    }
  }
}

export interface Stack {
  baseUrl: string;
  keys: { alice: string; bob: string; admin: string };
  workerId: string;
  apiOutput: () => string;
  workerOutput: () => string;
  stop: () => Promise<void>;
}

export async function startStack(): Promise<Stack> {
  ensureBuilt();
  const scratch: ScratchDatabase = await createScratchDatabase('lorafleet_dashboard');
  const dataSource: DataSource = createDataSource({ url: scratch.url });
  const queuePrefix = `lf-dash-${randomBytes(4).toString('hex')}`;
  let api: AppProcess | undefined;
  let worker: AppProcess | undefined;
  const stop = async () => {
    await Promise.all([api?.stop(), worker?.stop()]);
    if (dataSource.isInitialized) await dataSource.destroy();
    await scratch.drop();
    const redis = new Redis(REDIS_URL);
    const keys = await redis.keys(`${queuePrefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  };
  try {
    await dataSource.initialize();
    await runMigrations(dataSource);
    const tenants = new TenantsRepository(dataSource);
    const alice = await tenants.createTenant('alice');
    const bob = await tenants.createTenant('bob');
    const ops = await tenants.createTenant('ops');
    const keys = {
      alice: (await tenants.issueApiKey(alice.id)).plaintext,
      bob: (await tenants.issueApiKey(bob.id)).plaintext,
      admin: (await tenants.issueApiKey(ops.id, { isAdmin: true })).plaintext,
    };

    const port = await freePort();
    const baseUrl = `http://127.0.0.1:${port}`;
    const workerId = 'dashboard-worker';
    const env = {
      DATABASE_URL: scratch.url,
      REDIS_URL,
      LORAFLEET_MODELS_DIR: path.join(REPO_ROOT, 'models'),
      LORAFLEET_QUEUE_PREFIX: queuePrefix,
      LORAFLEET_MIN_EXAMPLES: '4',
      LORAFLEET_LOG_LEVEL: process.env.LORAFLEET_TEST_LOG_DIR ? 'log' : 'warn',
    };
    api = new AppProcess('api', {
      ...env,
      PORT: String(port),
      HOST: '127.0.0.1',
      LORAFLEET_OUTBOX_POLL_MS: '200',
    });
    worker = new AppProcess('worker', {
      ...env,
      LORAFLEET_BACKEND: 'cpu',
      LORAFLEET_WORKER_ID: workerId,
      LORAFLEET_HEARTBEAT_MS: '1000',
      LORAFLEET_CHECKPOINT_EVERY_STEPS: '5',
      LORAFLEET_CONTROL_POLL_MS: '250',
    });
    await waitFor(
      'api /readyz',
      async () => ((await fetch(`${baseUrl}/readyz`)).ok ? true : undefined),
      60_000,
    );
    const [apiProcess, workerProcess] = [api, worker];
    return {
      baseUrl,
      keys,
      workerId,
      apiOutput: () => apiProcess.output.join(''),
      workerOutput: () => workerProcess.output.join(''),
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** A small REST client for setup and cross-checks (the browser does the real work). */
export class RestClient {
  constructor(
    private readonly baseUrl: string,
    private readonly key: string,
  ) {}

  async request<T = any>(method: string, route: string, body?: unknown): Promise<T> {
    const response = await fetch(`${this.baseUrl}${route}`, {
      method,
      headers: {
        authorization: `Bearer ${this.key}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = (await response.json()) as T;
    if (!response.ok)
      throw new Error(`${method} ${route}: ${response.status} ${JSON.stringify(json)}`);
    return json;
  }

  async upload(name: string, content: string): Promise<{ id: string; status: string }> {
    const form = new FormData();
    form.append('purpose', 'fine-tune');
    form.append('file', new Blob([content]), name);
    const response = await fetch(`${this.baseUrl}/v1/files`, {
      method: 'POST',
      headers: { authorization: `Bearer ${this.key}` },
      body: form,
    });
    return (await response.json()) as { id: string; status: string };
  }
}
