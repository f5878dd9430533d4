import {
  ApiKeysRepository,
  TenantsRepository,
  createDataSource,
  runMigrations,
} from '@lorafleet/db';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { DataSource } from 'typeorm';
import {
  AppProcess,
  REPO_ROOT,
  deleteQueueKeys,
  waitFor,
  createScratchDatabase,
  type ScratchDatabase,
  freePort,
} from '@lorafleet/testing';

export const TERMINAL = ['succeeded', 'failed', 'cancelled'];

/** Short lock, stall and poll settings so fault tests finish in seconds (RELIABILITY.md). */
export const FAST_WORKER_ENV: Record<string, string> = {
  LORAFLEET_BACKEND: 'cpu',
  LORAFLEET_LOCK_MS: '1000',
  LORAFLEET_STALLED_MS: '300',
  LORAFLEET_CONTROL_POLL_MS: '200',
  LORAFLEET_RETRY_BACKOFF_MS: '100',
  LORAFLEET_WATCHDOG_MS: '60000',
  LORAFLEET_SHUTDOWN_GRACE_MS: '8000',
  LORAFLEET_HEARTBEAT_MS: '500',
  LORAFLEET_LOG_LEVEL: 'warn',
};

export interface JobEventView {
  id: string;
  level: string;
  type: string;
  message: string;
  data: { status?: string; [key: string]: unknown } | null;
}

export interface JobView {
  id: string;
  status: string;
  error: { code: string; message: string } | null;
  adapter_id: string | null;
  base_model_hash: string | null;
  progress: { step: number; total_steps: number | null };
  worker: string | null;
  organization_id: string;
}

/**
 * A scratch database, the built api as a process, and workers started on demand, all on
 * one private BullMQ prefix. Used by the fault-injection suites.
 */
export class Fleet {
  readonly queuePrefix = `lf-fleet-${randomBytes(4).toString('hex')}`;
  scratch!: ScratchDatabase;
  dataSource!: DataSource;
  api!: AppProcess;
  baseUrl = '';
  apiKey = '';
  tenantId = '';
  private readonly workers: AppProcess[] = [];

  constructor(
    private readonly options: {
      redisUrl?: string;
      /** Postgres URL the processes use (e.g. through a proxy); defaults to the scratch DB. */
      processDatabaseUrl?: (scratchUrl: string) => string;
      modelsDir?: string;
      apiEnv?: Record<string, string>;
    } = {},
  ) {}

  get redisUrl(): string {
    return this.options.redisUrl ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  }

  get processDatabaseUrl(): string {
    return this.options.processDatabaseUrl?.(this.scratch.url) ?? this.scratch.url;
  }

  sharedEnv(): Record<string, string> {
    return {
      DATABASE_URL: this.processDatabaseUrl,
      REDIS_URL: this.redisUrl,
      LORAFLEET_MODELS_DIR: this.options.modelsDir ?? path.join(REPO_ROOT, 'models'),
      LORAFLEET_QUEUE_PREFIX: this.queuePrefix,
    };
  }

  async start(): Promise<void> {
    this.scratch = await createScratchDatabase('lorafleet_fleet');
    this.dataSource = createDataSource({ url: this.scratch.url });
    await this.dataSource.initialize();
    await runMigrations(this.dataSource);
    const tenant = await new TenantsRepository(this.dataSource).createTenant('fleet');
    this.tenantId = tenant.id;
    this.apiKey = (await new ApiKeysRepository(this.dataSource).issue(tenant.id)).plaintext;
    const port = await freePort();
    this.baseUrl = `http://127.0.0.1:${port}`;
    this.api = new AppProcess('api', {
      ...this.sharedEnv(),
      PORT: String(port),
      HOST: '127.0.0.1',
      LORAFLEET_OUTBOX_POLL_MS: '100',
      LORAFLEET_RECONCILE_MS: '1000',
      LORAFLEET_MIN_EXAMPLES: '2',
      LORAFLEET_LOG_LEVEL: 'warn',
      ...this.options.apiEnv,
    });
    await waitFor(
      'api /readyz',
      async () => ((await fetch(`${this.baseUrl}/readyz`)).ok ? true : undefined),
      60_000,
    );
  }

  startWorker(id: string, env: Record<string, string> = {}): AppProcess {
    const worker = new AppProcess('worker', {
      ...this.sharedEnv(),
      ...FAST_WORKER_ENV,
      LORAFLEET_WORKER_ID: id,
      ...env,
    });
    this.workers.push(worker);
    return worker;
  }

  /** Waits until the worker has registered (its backend probe passed). */
  async workerReady(id: string): Promise<void> {
    await waitFor(
      `worker ${id} registered`,
      async () => {
        const rows = await this.dataSource.query<unknown[]>('SELECT 1 FROM workers WHERE id = $1', [
          id,
        ]);
        return rows.length ? true : undefined;
      },
      60_000,
    );
  }

  /** Stops every worker this fleet started, so the next test starts with none. */
  async stopWorkers(): Promise<void> {
    await Promise.all(this.workers.splice(0).map((w) => w.stop()));
  }

  /** Everything the workers printed, for failure diagnostics. */
  workerOutput(): string {
    return this.workers.map((w) => w.text).join('\n');
  }

  async stop(): Promise<void> {
    await Promise.all([...this.workers.map((w) => w.stop()), this.api?.stop()]);
    await deleteQueueKeys(this.redisUrl, this.queuePrefix);
    await this.dataSource?.destroy();
    await this.scratch?.drop();
  }

  async request(
    method: string,
    route: string,
    body?: unknown,
    apiKey = this.apiKey,
  ): Promise<{ status: number; body: any }> {
    const response = await fetch(`${this.baseUrl}${route}`, {
      method,
      headers: {
        authorization: `Bearer ${apiKey}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: response.status, body: await response.json() };
  }

  async uploadExamples(count: number): Promise<string> {
    return this.uploadLines(
      Array.from({ length: count }, (_, i) => ({
        prompt: `Say ${i}: `,
        completion: `number ${i} ok`,
      })),
    );
  }

  /** Uploads these JSONL rows as a training file; returns its id. */
  async uploadLines(rows: object[]): Promise<string> {
    const lines = rows.map((row) => JSON.stringify(row));
    const form = new FormData();
    form.append('purpose', 'fine-tune');
    form.append('file', new Blob([lines.join('\n') + '\n']), 'train.jsonl');
    const response = await fetch(`${this.baseUrl}/v1/files`, {
      method: 'POST',
      headers: { authorization: `Bearer ${this.apiKey}` },
      body: form,
    });
    const file = (await response.json()) as { id: string; status: string };
    if (file.status !== 'processed') throw new Error(`upload failed: ${JSON.stringify(file)}`);
    return file.id;
  }

  /** A job of `steps` optimizer steps on the tiny model (one example per step). */
  async createJob(
    fileId: string,
    steps: number,
    extra: Record<string, unknown> = {},
  ): Promise<JobView> {
    const created = await this.request('POST', '/v1/fine_tuning/jobs', {
      model: 'tiny-random-gpt2',
      training_file: fileId,
      seed: 11,
      hyperparameters: { n_epochs: 50, batch_size: 1 },
      lora: { r: 4, alpha: 8 },
      training: { max_seq_length: 32, max_steps: steps },
      ...extra,
    });
    if (created.status !== 201) throw new Error(`create failed: ${JSON.stringify(created.body)}`);
    return created.body as JobView;
  }

  async job(id: string): Promise<JobView> {
    return (await this.request('GET', `/v1/fine_tuning/jobs/${id}`)).body as JobView;
  }

  async waitForJob(
    id: string,
    predicate: (job: JobView) => boolean,
    what: string,
    timeoutMs = 90_000,
  ): Promise<JobView> {
    return waitFor(
      what,
      async () => {
        const job = await this.job(id);
        return predicate(job) ? job : undefined;
      },
      timeoutMs,
      100,
    );
  }

  async waitForStep(id: string, step: number, timeoutMs = 90_000): Promise<JobView> {
    return this.waitForJob(
      id,
      (j) => j.status === 'running' && j.progress.step >= step,
      `job ${id} at step ${step}`,
      timeoutMs,
    );
  }

  waitForTerminal(id: string, timeoutMs = 120_000): Promise<JobView> {
    return this.waitForJob(
      id,
      (j) => TERMINAL.includes(j.status),
      `job ${id} to finish`,
      timeoutMs,
    );
  }

  /**
   * Every event of the job, oldest first. Paged: a long run on a loaded machine writes more
   * than one page (100) of progress events, which pushed its first status events out.
   */
  async events(id: string): Promise<JobEventView[]> {
    const newestFirst: JobEventView[] = [];
    let after = '';
    for (;;) {
      const page = await this.request(
        'GET',
        `/v1/fine_tuning/jobs/${id}/events?limit=100${after && `&after=${after}`}`,
      );
      const data = page.body.data as JobEventView[];
      newestFirst.push(...data);
      if (page.body.has_more !== true || data.length === 0) return newestFirst.reverse();
      after = data[data.length - 1].id;
    }
  }

  /** Status events oldest first, checked to follow DESIGN §4's transition table (R14). */
  async statusTrail(id: string): Promise<string[]> {
    return (await this.events(id)).filter((e) => e.type === 'status').map((e) => e.data!.status!);
  }

  async messages(id: string): Promise<string[]> {
    return (await this.events(id)).map((e) => e.message);
  }

  async row(id: string): Promise<{ attempt: number; failures: number; adapters: number }> {
    const rows = await this.dataSource.query<
      { attempt: number; failures: number; adapters: number }[]
    >(
      `SELECT attempt, failures, (SELECT count(*)::int FROM adapters a WHERE a.job_id = j.id) AS adapters
         FROM fine_tuning_jobs j WHERE id = $1`,
      [id],
    );
    return rows[0];
  }
}
