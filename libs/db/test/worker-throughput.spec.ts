/**
 * Measured training speed (issue 20 item 3): the `worker_throughput` table, its migrations both
 * ways (the table, then its `method` column), and the WorkersRepository reads the job estimate
 * uses (median of the newest samples per backend and training method, and the backends the
 * live fleet trains on).
 */
import type { MethodType } from '@lorafleet/contracts';
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

  const sample = (
    baseModel: string,
    backend: string,
    tokensPerSecond: number,
    method: MethodType = 'supervised',
  ) => ({
    baseModel,
    method,
    backend,
    workerId: 'w1',
    jobId: `ftjob-${tokensPerSecond}`,
    attempt: 1,
    tokensPerSecond,
    trainedTokens: 100,
  });

  it('answers the median of the newest samples per backend of one base model', async () => {
    for (const tps of [100, 300, 200])
      await workers.recordThroughput(sample('tiny', 'wasm-blas', tps));
    await workers.recordThroughput(sample('tiny', 'webgpu', 5000));
    await workers.recordThroughput(sample('other', 'wasm-blas', 1));
    expect(await workers.throughputFor('tiny', 'supervised')).toEqual([
      { backend: 'wasm-blas', tokensPerSecond: 200, samples: 3, lastMeasuredAt: expect.any(Date) },
      { backend: 'webgpu', tokensPerSecond: 5000, samples: 1, lastMeasuredAt: expect.any(Date) },
    ]);
    // Only the 2 newest wasm-blas samples (300, 200) count: their median is 250.
    expect((await workers.throughputFor('tiny', 'supervised', 2))[0]).toMatchObject({
      tokensPerSecond: 250,
      samples: 2,
    });
    expect(await workers.throughputFor('never-trained', 'supervised')).toEqual([]);
  });

  it('keeps each training method’s speed apart', async () => {
    await workers.recordThroughput(sample('tiny-dpo', 'wasm-blas', 1000));
    await workers.recordThroughput(sample('tiny-dpo', 'wasm-blas', 300, 'dpo'));
    await workers.recordThroughput(sample('tiny-dpo', 'wasm-blas', 500, 'dpo'));
    expect(await workers.throughputFor('tiny-dpo', 'dpo')).toEqual([
      { backend: 'wasm-blas', tokensPerSecond: 400, samples: 2, lastMeasuredAt: expect.any(Date) },
    ]);
    expect(await workers.throughputFor('tiny-dpo', 'supervised')).toEqual([
      { backend: 'wasm-blas', tokensPerSecond: 1000, samples: 1, lastMeasuredAt: expect.any(Date) },
    ]);
    // A base model measured only with SFT has no DPO speed yet.
    expect(await workers.throughputFor('tiny', 'dpo')).toEqual([]);
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

  const methods = async () =>
    ds.query<{ base_model: string; method: string | undefined }[]>(
      'SELECT * FROM worker_throughput ORDER BY id',
    );

  it('the method migration goes down (dropping DPO samples) and up (older rows read supervised)', async () => {
    const before = await methods();
    expect(before.filter((row) => row.method === 'dpo')).toHaveLength(2);
    await ds.undoLastMigration({ transaction: 'each' });
    const down = await methods();
    // The supervised samples stay; the DPO ones go, so older code never reads them as SFT.
    expect(down).toHaveLength(before.length - 2);
    expect(down.every((row) => row.method === undefined)).toBe(true);
    expect(await runMigrations(ds)).toEqual(['WorkerThroughputMethod1796528697644']);
    expect((await methods()).map((row) => row.method)).toEqual(down.map(() => 'supervised'));
    expect(await workers.throughputFor('tiny-dpo', 'supervised')).toMatchObject([
      { backend: 'wasm-blas', tokensPerSecond: 1000, samples: 1 },
    ]);
  });

  it('the table’s migration goes down and up again', async () => {
    await ds.undoLastMigration({ transaction: 'each' });
    await ds.undoLastMigration({ transaction: 'each' });
    const gone = await ds.query<{ name: string | null }[]>(
      `SELECT to_regclass('worker_throughput')::text AS name`,
    );
    expect(gone).toEqual([{ name: null }]);
    expect(await runMigrations(ds)).toEqual([
      'WorkerThroughput1796524791437',
      'WorkerThroughputMethod1796528697644',
    ]);
    await workers.recordThroughput(sample('tiny', 'cpu', 42));
    expect(await workers.throughputFor('tiny', 'supervised')).toContainEqual(
      expect.objectContaining({ backend: 'cpu', tokensPerSecond: 42 }),
    );
  });
});
