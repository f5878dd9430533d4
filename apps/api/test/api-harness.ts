import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { apiEnvShape, parseEnv, type ApiEnv } from '@lorafleet/contracts';
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
  deleteQueueKeys,
  waitFor,
  createScratchDatabase,
  type ScratchDatabase,
  PrivateRedis,
  TcpProxy,
  freePort,
} from '@lorafleet/testing';
import { createApiApp } from '../src/bootstrap';
import type { LogDestination } from '../src/http/request-logging';

export const MODELS_DIR = path.resolve(__dirname, '../../../models');

/** `waitFor` with the API suites' defaults: 10 s, polling every 50 ms. */
export function until<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 10_000,
): Promise<T> {
  return waitFor(what, probe, timeoutMs, 50);
}

/** Fault helpers of libs/testing, shared with the worker suites, for the api specs. */
export { PrivateRedis, TcpProxy, freePort };

export interface ApiHarness {
  app: NestFastifyApplication;
  baseUrl: string;
  env: ApiEnv;
  /** A direct connection to the scratch database (never through `proxy`). */
  dataSource: DataSource;
  scratch: ScratchDatabase;
  tenants: TenantsRepository;
  apiKeys: ApiKeysRepository;
  /** Present with `proxyPostgres`: stop it to cut the API off from Postgres, start it to heal. */
  proxy?: TcpProxy;
  close(): Promise<void>;
}

export interface StartApiOptions {
  /** Route the API's Postgres connections through a TcpProxy (R4 tests). */
  proxyPostgres?: boolean;
  /** Runs on the created app before it initialises and listens (e.g. to add Fastify hooks). */
  beforeListen?: (app: NestFastifyApplication) => void | Promise<void>;
  /** Collects the API's JSON log lines (default: stdout). */
  logDestination?: LogDestination;
}

/** The real API in-process on a scratch database and its own BullMQ prefix. */
export async function startApi(
  overrides: Record<string, string> = {},
  options: StartApiOptions = {},
): Promise<ApiHarness> {
  const scratch = await createScratchDatabase('lorafleet_api');
  const dataSource = createDataSource({ url: scratch.url });
  await dataSource.initialize();
  await runMigrations(dataSource);
  let proxy: TcpProxy | undefined;
  let databaseUrl = scratch.url;
  if (options.proxyPostgres) {
    const url = new URL(scratch.url);
    proxy = new TcpProxy(await freePort(), Number(url.port || 5432));
    await proxy.start();
    url.hostname = '127.0.0.1';
    url.port = String(proxy.port);
    databaseUrl = url.toString();
  }
  const env = parseEnv(apiEnvShape, {
    DATABASE_URL: databaseUrl,
    REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    LORAFLEET_MODELS_DIR: MODELS_DIR,
    LORAFLEET_QUEUE_PREFIX: `lf-api-${randomBytes(4).toString('hex')}`,
    LORAFLEET_MIN_EXAMPLES: '2',
    LORAFLEET_OUTBOX_POLL_MS: '100',
    LORAFLEET_LOG_LEVEL: 'error',
    ...overrides,
  });
  const app = await createApiApp(env, { logDestination: options.logDestination });
  await options.beforeListen?.(app);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.getHttpServer().address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    app,
    baseUrl: `http://127.0.0.1:${port}`,
    env,
    dataSource,
    scratch,
    tenants: new TenantsRepository(dataSource),
    apiKeys: new ApiKeysRepository(dataSource),
    proxy,
    async close() {
      await app.close();
      await proxy?.stop();
      await deleteQueueKeys(env.REDIS_URL, env.LORAFLEET_QUEUE_PREFIX);
      await dataSource.destroy();
      await scratch.drop();
    },
  };
}

export class Client {
  constructor(
    private readonly baseUrl: string,
    readonly apiKey: string,
  ) {}

  async request(
    method: string,
    route: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<{ status: number; body: any; headers: Headers }> {
    const response = await fetch(`${this.baseUrl}${route}`, {
      method,
      headers: {
        authorization: `Bearer ${this.apiKey}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      // binary or plain text body
    }
    return { status: response.status, body: parsed, headers: response.headers };
  }

  async upload(content: string | Uint8Array, filename = 'train.jsonl', purpose = 'fine-tune') {
    const form = new FormData();
    form.append('purpose', purpose);
    form.append('file', new Blob([content]), filename);
    const response = await fetch(`${this.baseUrl}/v1/files`, {
      method: 'POST',
      headers: { authorization: `Bearer ${this.apiKey}` },
      body: form,
    });
    return { status: response.status, body: (await response.json()) as any };
  }
}

export const GOOD_JSONL =
  [
    { prompt: 'Say hi: ', completion: 'hi' },
    { prompt: 'Say yes: ', completion: 'yes' },
    { prompt: 'Say no: ', completion: 'no' },
  ]
    .map((line) => JSON.stringify(line))
    .join('\n') + '\n';
