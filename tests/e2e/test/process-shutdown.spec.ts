/**
 * Issue 14, items 13–15: SIGTERM bounds the shutdown of the api and the worker by
 * LORAFLEET_SHUTDOWN_GRACE_MS in every state, and a Redis outage is logged once (as JSON by
 * the api), not as ioredis's multi-line "Unhandled error event" per reconnect attempt. The
 * built api and worker run as processes against a private redis-server this suite kills.
 */
import {
  NodeProcess,
  REPO_ROOT,
  waitFor,
  type AppProcess,
  PrivateRedis,
  freePort,
} from '@lorafleet/testing';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Fleet } from './fleet-harness';

jest.setTimeout(120_000);

/** Short graces keep the suite fast; the margin covers process start-up jitter on 2 cores. */
const GRACE_MS = 3000;
const MARGIN_MS = 2500;

const OUTAGE = 'redis unreachable';
const RECOVERY = 'redis reachable again';

const count = (text: string, needle: string) => text.split(needle).length - 1;

/** Waits until the process has printed `needle`. */
const printed = (process: NodeProcess, needle: string, what: string, timeoutMs = 20_000) =>
  waitFor(what, () => (process.text.includes(needle) ? true : undefined), timeoutMs);

/**
 * A TCP proxy that can go silent: after `stall()` it keeps every connection open but passes
 * no more bytes, as a Postgres that stopped answering (frozen, or behind a dead network)
 * does. Nothing fails fast then; only a deadline ends the wait.
 */
class StallingProxy {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private stalled = false;

  constructor(
    readonly port: number,
    private readonly targetPort: number,
  ) {}

  async start(): Promise<void> {
    this.server = createServer((client) => {
      const upstream = connect(this.targetPort, '127.0.0.1');
      this.sockets.add(client).add(upstream);
      client.on('data', (chunk) => void (this.stalled || upstream.write(chunk)));
      upstream.on('data', (chunk) => void (this.stalled || client.write(chunk)));
      const drop = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
    });
    const server = this.server;
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
  }

  stall(): void {
    this.stalled = true;
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    const server = this.server;
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  }
}

/** Resolves with the exit code and how long after `since` it came, or null if still alive. */
async function exitWithin(
  process: NodeProcess,
  since: number,
  ms: number,
): Promise<{ code: number | null; afterMs: number } | null> {
  const exited = process.waitForExit().then((code) => ({ code, afterMs: Date.now() - since }));
  const timeout = new Promise<null>((resolve) => setTimeout(() => resolve(null), ms));
  return Promise.race([exited, timeout]);
}

describe('shutdown deadline (shutdownOnSignals)', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'lorafleet-shutdown-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** A process whose orderly close never finishes (or finishes at once) and that stays alive. */
  function script(close: 'hangs' | 'finishes'): NodeProcess {
    const file = path.join(dir, `${close}.js`);
    writeFileSync(
      file,
      `const { shutdownOnSignals } = require(${JSON.stringify(path.join(REPO_ROOT, 'libs/db'))});
const logger = { log: console.log, warn: console.log, error: console.log };
shutdownOnSignals({
  graceMs: 1500,
  close: () => ${close === 'hangs' ? 'new Promise(() => undefined)' : 'Promise.resolve()'},
  forceClose: () => console.log('forceClose called'),
  logger,
});
setInterval(() => undefined, 1000); // a server that would keep the process alive
console.log('ready');
`,
    );
    return new NodeProcess(`shutdown-${close}`, file, {});
  }

  it('exits 1 at the grace when the orderly shutdown never finishes, cutting connections before', async () => {
    const child = script('hangs');
    await printed(child, 'ready', 'script ready');
    const since = Date.now();
    child.signal('SIGTERM');
    const exit = await exitWithin(child, since, 1500 + MARGIN_MS);
    expect(exit).not.toBeNull();
    expect(exit?.code).toBe(1);
    expect(exit?.afterMs).toBeGreaterThanOrEqual(1400);
    expect(child.text).toContain('forceClose called');
    expect(child.text).toContain('shutdown not finished after 1500 ms');
  });

  it('exits 0 as soon as the orderly shutdown finishes', async () => {
    const child = script('finishes');
    await printed(child, 'ready', 'script ready');
    const since = Date.now();
    child.signal('SIGTERM');
    const exit = await exitWithin(child, since, 1500 + MARGIN_MS);
    expect(exit?.code).toBe(0);
    expect(exit?.afterMs).toBeLessThan(1000);
    expect(child.text).not.toContain('forceClose called');
  });
});

describe('api and worker processes with a private Redis (issue 14, items 13–15)', () => {
  let redis: PrivateRedis;
  let fleet: Fleet;

  beforeAll(async () => {
    redis = new PrivateRedis(await freePort());
    await redis.start();
    fleet = new Fleet({
      redisUrl: redis.url,
      apiEnv: { LORAFLEET_LOG_LEVEL: 'log', LORAFLEET_SHUTDOWN_GRACE_MS: String(GRACE_MS) },
    });
    await fleet.start();
  });

  afterAll(async () => {
    await redis.start(); // in case a test failed mid-outage; Fleet.stop deletes queue keys
    await fleet.stop();
    await redis.stop();
  });

  it('logs a Redis outage once and its end once, the api as JSON lines only (item 15)', async () => {
    const worker: AppProcess = fleet.startWorker('w-outage-log');
    await fleet.workerReady('w-outage-log');
    await redis.stop();
    await printed(fleet.api, OUTAGE, 'api logs the outage');
    await printed(worker, OUTAGE, 'worker logs the outage');
    // Several reconnect attempts (ioredis retries every 50 ms, backing off to 2 s).
    await new Promise((resolve) => setTimeout(resolve, 4000));
    await redis.start();
    await printed(fleet.api, RECOVERY, 'api logs the recovery');
    await printed(worker, RECOVERY, 'worker logs the recovery');

    const apiText = fleet.api.text;
    const apiLines = apiText.split('\n').filter((line) => line.trim() !== '');
    const notJson = apiLines.filter((line) => {
      try {
        JSON.parse(line);
        return false;
      } catch {
        return true;
      }
    });
    expect(notJson).toEqual([]);
    expect(apiText).not.toContain('[ioredis]');
    expect(count(apiText, OUTAGE)).toBe(1);
    expect(count(apiText, RECOVERY)).toBe(1);
    const outageLine = JSON.parse(apiLines.find((line) => line.includes(OUTAGE)) ?? '{}');
    expect(outageLine).toMatchObject({ level: 'warn', context: 'Redis' });

    expect(worker.text).not.toContain('[ioredis]');
    expect(worker.text).not.toContain('Unhandled error event');
    expect(count(worker.text, OUTAGE)).toBe(1);
    expect(count(worker.text, RECOVERY)).toBe(1);
    await worker.stop();
  });

  it('an idle worker whose Redis is gone exits within the grace after SIGTERM and marks itself gone (item 13)', async () => {
    const worker = fleet.startWorker('w-sigterm-no-redis', {
      LORAFLEET_SHUTDOWN_GRACE_MS: String(GRACE_MS),
    });
    await fleet.workerReady('w-sigterm-no-redis');
    await redis.stop();
    await printed(worker, OUTAGE, 'worker logs the outage');
    const since = Date.now();
    worker.signal('SIGTERM');
    const exit = await exitWithin(worker, since, GRACE_MS + MARGIN_MS);
    if (!exit) worker.signal('SIGKILL'); // do not leave it behind when the test fails
    expect(exit).not.toBeNull();
    // Nothing was left to wait for once the Redis connections were cut: a clean exit, well
    // before the deadline.
    expect(exit).toEqual({ code: 0, afterMs: expect.any(Number) });
    expect(exit?.afterMs).toBeLessThan(GRACE_MS);
    // Postgres was reachable, so the worker also marked itself gone.
    const rows = await fleet.dataSource.query<{ status: string }[]>(
      'SELECT status FROM workers WHERE id = $1',
      ['w-sigterm-no-redis'],
    );
    expect(rows[0]?.status).toBe('gone');
    await redis.start();
  });

  it('a training worker whose Redis is gone hands its job back and exits within the grace (item 13)', async () => {
    const grace = 8000; // the trainer checkpoints before it stops
    const fileId = await fleet.uploadExamples(20);
    const worker = fleet.startWorker('w-sigterm-busy', {
      LORAFLEET_SHUTDOWN_GRACE_MS: String(grace),
    });
    await fleet.workerReady('w-sigterm-busy');
    const job = await fleet.createJob(fileId, 400);
    await fleet.waitForStep(job.id, 2);
    await redis.stop();
    await printed(worker, OUTAGE, 'worker logs the outage');
    const since = Date.now();
    worker.signal('SIGTERM');
    const exit = await exitWithin(worker, since, grace + MARGIN_MS);
    if (!exit) worker.signal('SIGKILL');
    expect(exit).not.toBeNull();
    expect(exit?.afterMs).toBeLessThan(grace + MARGIN_MS);
    // Postgres was reachable: the job went back to the queue without a failure counted.
    const rows = await fleet.dataSource.query<{ status: string; failures: number }[]>(
      'SELECT status, failures FROM fine_tuning_jobs WHERE id = $1',
      [job.id],
    );
    expect(rows[0]).toEqual({ status: 'queued', failures: 0 });
    expect(worker.childPids()).toEqual([]);
    await redis.start();
    await fleet.request('POST', `/v1/fine_tuning/jobs/${job.id}/cancel`);
  });

  it('a worker whose Postgres stopped answering exits 1 when the grace is spent (item 13)', async () => {
    const proxy = new StallingProxy(await freePort(), Number(new URL(fleet.scratch.url).port));
    await proxy.start();
    try {
      const url = new URL(fleet.scratch.url);
      url.host = `127.0.0.1:${proxy.port}`;
      const worker = fleet.startWorker('w-sigterm-no-pg', {
        DATABASE_URL: url.toString(),
        LORAFLEET_SHUTDOWN_GRACE_MS: String(GRACE_MS),
      });
      await fleet.workerReady('w-sigterm-no-pg');
      proxy.stall();
      const since = Date.now();
      worker.signal('SIGTERM');
      const exit = await exitWithin(worker, since, GRACE_MS + MARGIN_MS);
      if (!exit) worker.signal('SIGKILL');
      expect(exit).not.toBeNull();
      // Marking itself gone waited on Postgres until the deadline: exit 1, on time.
      expect(exit?.code).toBe(1);
      expect(exit?.afterMs).toBeGreaterThanOrEqual(GRACE_MS - 100);
      expect(exit?.afterMs).toBeLessThan(GRACE_MS + MARGIN_MS);
      expect(worker.text).toContain(`shutdown not finished after ${GRACE_MS} ms`);
    } finally {
      await proxy.stop();
    }
  });

  it('the api exits within the grace after SIGTERM while a client holds a half-sent body (item 14)', async () => {
    const port = Number(new URL(fleet.baseUrl).port);
    const socket: Socket = connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined); // the server cuts it; that is the point
    socket.write(
      [
        'POST /v1/fine_tuning/jobs HTTP/1.1',
        `Host: 127.0.0.1:${port}`,
        `Authorization: Bearer ${fleet.apiKey}`,
        'Content-Type: application/json',
        'Content-Length: 1000',
        '',
        '{"model":"tiny-random-gpt2","training_file":"',
      ].join('\r\n'),
    );
    // Let the request reach the route handler's body parser.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const since = Date.now();
    fleet.api.signal('SIGTERM');
    const exit = await exitWithin(fleet.api, since, GRACE_MS + MARGIN_MS);
    if (!exit) fleet.api.signal('SIGKILL');
    socket.destroy();
    await closed;
    expect(exit).not.toBeNull();
    expect(exit?.afterMs).toBeLessThan(GRACE_MS + MARGIN_MS);
    // The drain was cut, so the shutdown was not clean: non-zero, and it says why.
    expect(exit?.code).toBe(1);
    expect(fleet.api.text).toContain('closing open connections');
  });
});
