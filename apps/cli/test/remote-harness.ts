/**
 * The real api (and optionally a worker) as child processes for the remote CLI tests, and a
 * helper that runs the built `lorafleet` binary as a process against them.
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
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';

export const CLI_BIN = path.join(REPO_ROOT, 'apps/cli/bin/lorafleet.js');
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/**
 * The process tests run the built CLI, api and worker ("npm test" builds them first); say so
 * plainly when a build is missing.
 */
export function assertBuilt(): void {
  for (const app of ['cli', 'api', 'worker']) {
    const main = path.join(REPO_ROOT, `apps/${app}/dist/main.js`);
    if (!existsSync(main)) {
      throw new Error(`${main} is missing: run "npm run build" first ("npm test" does)`);
    }
  }
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `node apps/cli/bin/lorafleet.js …args` and collects its output. */
export function runCli(
  args: string[],
  env: Record<string, string | undefined> = {},
  timeoutMs = 60_000,
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const childEnv: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' };
    delete childEnv.LORAFLEET_API_URL;
    delete childEnv.LORAFLEET_API_KEY;
    for (const [k, v] of Object.entries(env)) {
      if (v === undefined) delete childEnv[k];
      else childEnv[k] = v;
    }
    const child = spawn(process.execPath, [CLI_BIN, ...args], {
      cwd: REPO_ROOT,
      env: childEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export interface RemoteFixture {
  baseUrl: string;
  apiKey: string;
  /** The scratch database the api uses (for the `admin` commands). */
  databaseUrl: string;
  /** The tenant that owns `apiKey`. */
  tenantId: string;
  /** The env a CLI run needs to reach the api. */
  env: Record<string, string>;
  apiOutput(): string;
  workerOutput(): string;
  close(): Promise<void>;
}

/** Scratch database + tenant, the built api and (optionally) one worker on tiny models. */
export async function startRemoteFixture(
  options: { worker?: boolean } = {},
): Promise<RemoteFixture> {
  assertBuilt();
  const scratch: ScratchDatabase = await createScratchDatabase('lorafleet_cli');
  const dataSource = createDataSource({ url: scratch.url });
  await dataSource.initialize();
  await runMigrations(dataSource);
  const tenant = await new TenantsRepository(dataSource).createTenant('cli-tests');
  const apiKey = (await new ApiKeysRepository(dataSource).issue(tenant.id)).plaintext;
  await dataSource.destroy();

  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;
  const queuePrefix = `lf-cli-${randomBytes(4).toString('hex')}`;
  const env = {
    DATABASE_URL: scratch.url,
    REDIS_URL,
    LORAFLEET_MODELS_DIR: path.join(REPO_ROOT, 'models'),
    LORAFLEET_QUEUE_PREFIX: queuePrefix,
    LORAFLEET_MIN_EXAMPLES: '2',
    LORAFLEET_LOG_LEVEL: 'warn',
  };
  const api = new AppProcess('api', {
    ...env,
    PORT: String(port),
    HOST: '127.0.0.1',
    LORAFLEET_OUTBOX_POLL_MS: '100',
    // The webhook tests' receiver listens on loopback.
    LORAFLEET_WEBHOOK_ALLOW_PRIVATE: '1',
  });
  const worker = options.worker
    ? new AppProcess('worker', {
        ...env,
        LORAFLEET_BACKEND: 'cpu',
        LORAFLEET_WORKER_ID: 'cli-test-worker',
        LORAFLEET_CONTROL_POLL_MS: '200',
        LORAFLEET_CHECKPOINT_EVERY_STEPS: '20',
        LORAFLEET_RETRY_BACKOFF_MS: '0',
      })
    : undefined;
  const deadline = Date.now() + 60_000;
  for (;;) {
    const ready = await fetch(`${baseUrl}/readyz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ready) break;
    if (Date.now() > deadline) {
      await Promise.all([api.stop(), worker?.stop()]);
      await scratch.drop();
      throw new Error(`api did not become ready:\n${api.text}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    baseUrl,
    apiKey,
    databaseUrl: scratch.url,
    tenantId: tenant.id,
    env: { LORAFLEET_API_URL: baseUrl, LORAFLEET_API_KEY: apiKey },
    apiOutput: () => api.text,
    workerOutput: () => worker?.text ?? '',
    async close() {
      await Promise.all([api.stop(), worker?.stop()]);
      await deleteQueueKeys(REDIS_URL, queuePrefix);
      await scratch.drop();
    },
  };
}

/** `waitFor` with the CLI suites' defaults: 30 s, polling every 200 ms. */
export function until<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 30_000,
  intervalMs = 200,
): Promise<T> {
  return waitFor(what, probe, timeoutMs, intervalMs);
}
