/**
 * R24: workers survive Redis and Postgres restarts during training. The api and worker talk
 * to a private redis-server and to Postgres through a TCP proxy, so the test can take each
 * away and bring it back without touching the shared services.
 */
import { Fleet } from './fleet-harness';
import { PrivateRedis, TcpProxy, freePort } from '@lorafleet/testing';

jest.setTimeout(240_000);

describe('worker survives service restarts (R24)', () => {
  let redis: PrivateRedis;
  let proxy: TcpProxy;
  let fleet: Fleet;
  let fileId: string;

  beforeAll(async () => {
    redis = new PrivateRedis(await freePort());
    await redis.start();
    proxy = new TcpProxy(await freePort(), 5432);
    await proxy.start();
    fleet = new Fleet({
      redisUrl: redis.url,
      processDatabaseUrl: (url) => {
        const proxied = new URL(url);
        proxied.host = `127.0.0.1:${proxy.port}`;
        return proxied.toString();
      },
    });
    await fleet.start();
    fileId = await fleet.uploadExamples(40);
    fleet.startWorker('w-restarts');
    await fleet.workerReady('w-restarts');
  });

  afterAll(async () => {
    await fleet.stop();
    await proxy.stop();
    await redis.stop();
  });

  it('finishes a job across a Postgres outage mid-training', async () => {
    const job = await fleet.createJob(fileId, 200);
    await fleet.waitForStep(job.id, 3);
    await proxy.stop();
    await new Promise((resolve) => setTimeout(resolve, 3000));
    await proxy.start();
    const done = await fleet.waitForTerminal(job.id, 200_000);
    expect(done.status).toBe('succeeded');
    expect(await fleet.row(job.id)).toMatchObject({ adapters: 1 });
  });

  it('finishes a job across a Redis restart mid-training, and runs the next one', async () => {
    const job = await fleet.createJob(fileId, 200);
    await fleet.waitForStep(job.id, 3);
    await redis.stop();
    await new Promise((resolve) => setTimeout(resolve, 2000));
    await redis.start(); // empty: the restart lost every BullMQ key
    const done = await fleet.waitForTerminal(job.id, 200_000);
    expect(done.status).toBe('succeeded');
    expect(await fleet.row(job.id)).toMatchObject({ adapters: 1 });
    // The queue is usable again: a new job is delivered and trained.
    const next = await fleet.createJob(fileId, 5);
    expect((await fleet.waitForTerminal(next.id, 120_000)).status).toBe('succeeded');
  });
});
