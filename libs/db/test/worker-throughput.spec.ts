/**
 * Measured training speed (issue 20 item 3): the `worker_throughput` table, its migration both
 * ways, and the WorkersRepository reads the job estimate uses (median of the newest samples
 * per backend, and the backends the live fleet trains on).
 */
import type { DataSource } from 'typeorm';
import { createScratchDatabase, type ScratchDatabase } from '@lorafleet/testing';
import { WorkersRepository, createDataSource, runMigrations } from '../src';

describe('worker throughput', () => {
  let scratch: ScratchDatabase;
  let ds: DataSource;
  let workers: WorkersRepository;

  beforeAll(async () => {
    scratch = await createScratchDatabase('lorafleet_throughput');
    ds = createDataSource({ url: scratch.url });
    await ds.initialize();
    await runMigrations(ds);
    workers = new WorkersRepository(ds);
  });

  afterAll(async () => {
    await ds?.destroy();
    await scratch?.drop();
  });

  const sample = (baseModel: string, backend: string, tokensPerSecond: number, attempt = 1) => ({
    baseModel,
    backend,
    workerId: 'w1',
    jobId: `ftjob-${tokensPerSecond}`,
    attempt,
    tokensPerSecond,
    trainedTokens: 100,
  });

  it('answers the median of the newest samples per backend of one base model', async () => {
    for (const tps of [100, 300, 200])
      await workers.recordThroughput(sample('tiny', 'wasm-blas', tps));
    await workers.recordThroughput(sample('tiny', 'webgpu', 5000));
    await workers.recordThroughput(sample('other', 'wasm-blas', 1));
    expect(await workers.throughputFor('tiny')).toEqual([
      { backend: 'wasm-blas', tokensPerSecond: 200, samples: 3, lastMeasuredAt: expect.any(Date) },
      { backend: 'webgpu', tokensPerSecond: 5000, samples: 1, lastMeasuredAt: expect.any(Date) },
    ]);
    // Only the 2 newest wasm-blas samples (300, 200) count: their median is 250.
    expect((await workers.throughputFor('tiny', 2))[0]).toMatchObject({
      tokensPerSecond: 250,
      samples: 2,
    });
    expect(await workers.throughputFor('never-trained')).toEqual([]);
  });

  it('lists the backends of live training workers, with their largest memory budget', async () => {
    const register = (id: string, backend: string, memoryLimitMb: number | null) =>
      workers.register({
        id,
        host: 'h',
        pid: 1,
        backend,
        device: null,
        versions: null,
        memoryLimitMb,
      });
    await register('a', 'wasm-blas', 2000);
    await register('b', 'wasm-blas', 8000);
    await register('c', 'webgpu', null);
    await register('d', 'cpu', 1000);
    await workers.heartbeat('d', 'stopping', null);
    await register('e', 'tensorflow', 1000);
    await ds.query(
      `UPDATE workers SET last_heartbeat_at = now() - interval '1 hour' WHERE id = 'e'`,
    );
    expect(await workers.liveBackends(60_000)).toEqual([
      { backend: 'wasm-blas', workers: 2, maxMemoryLimitMb: 8000 },
      { backend: 'webgpu', workers: 1, maxMemoryLimitMb: null },
    ]);
  });

  it('the migration goes down and up again', async () => {
    await ds.undoLastMigration({ transaction: 'each' });
    const gone = await ds.query<{ name: string | null }[]>(
      `SELECT to_regclass('worker_throughput')::text AS name`,
    );
    expect(gone).toEqual([{ name: null }]);
    expect(await runMigrations(ds)).toEqual(['WorkerThroughput1796524791437']);
    await workers.recordThroughput(sample('tiny', 'cpu', 42));
    expect(await workers.throughputFor('tiny')).toContainEqual(
      expect.objectContaining({ backend: 'cpu', tokensPerSecond: 42 }),
    );
  });
});
