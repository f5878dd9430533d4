/**
 * The real stack for the browser tests: a scratch Postgres database with migrations, tenants
 * and keys, the built API (serving the built dashboard) and a real worker as child processes,
 * sharing Redis under a unique queue prefix. Same pattern as tests/e2e.
 */
import {
  ApiKeysRepository,
  TenantsRepository,
  createDataSource,
  runMigrations,
} from '@lorafleet/db';
import {
  AppProcess,
  REPO_ROOT,
  deleteQueueKeys,
  waitFor,
  createScratchDatabase,
  freePort,
  type ScratchDatabase,
} from '@lorafleet/testing';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { DataSource } from 'typeorm';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

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
    await deleteQueueKeys(REDIS_URL, queuePrefix);
  };
  try {
    await dataSource.initialize();
    await runMigrations(dataSource);
    const tenants = new TenantsRepository(dataSource);
    const apiKeys = new ApiKeysRepository(dataSource);
    const alice = await tenants.createTenant('alice');
    const bob = await tenants.createTenant('bob');
    const ops = await tenants.createTenant('ops');
    const keys = {
      alice: (await apiKeys.issue(alice.id)).plaintext,
      bob: (await apiKeys.issue(bob.id)).plaintext,
      // The fleet page shows every tenant's jobs and the queue depth: a fleet admin's view.
      admin: (await apiKeys.issue(ops.id, { isFleetAdmin: true })).plaintext,
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
      // Full logs when they go to a file (npm test prints them if the suite fails).
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
      apiOutput: () => apiProcess.text,
      workerOutput: () => workerProcess.text,
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
