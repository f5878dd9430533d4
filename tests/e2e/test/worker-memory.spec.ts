/**
 * The worker's pre-flight refusals and what it records (issue 13 items 2, 3 and 6; issue 14
 * item 12), with the built api and workers as real processes: a run over the memory limit
 * fails once or goes to a worker with more memory, data that trains nothing fails once, a
 * heavy truncation warns, and the fleet view and the job show what a run used.
 */
import { ApiKeysRepository } from '@lorafleet/db';
import { AppProcess, waitFor } from '@lorafleet/testing';
import { Fleet, TERMINAL } from './fleet-harness';

jest.setTimeout(240_000);

interface WorkerView {
  id: string;
  status: string;
  current_job: string | null;
  memory_limit_mb: number | null;
}

interface JobDetail {
  status: string;
  progress: { step: number };
  error: { code: string; message: string; param: string | null } | null;
  usage: { peak_memory_mb: number | null; tokens_per_second: number | null } | null;
}

/** A prompt of about 60 tokens for tiny-random-gpt2's tokenizer: past max_seq_length 32. */
const LONG_PROMPT = 'Repeat after me, slowly and clearly, every word of this long prompt:';

describe('worker memory limit and pre-flight refusals', () => {
  const fleet = new Fleet();
  let adminKey: string;
  let fileId: string;

  beforeAll(async () => {
    await fleet.start();
    const apiKeys = new ApiKeysRepository(fleet.dataSource);
    adminKey = (await apiKeys.issue(fleet.tenantId, { isAdmin: true })).plaintext;
    fileId = await fleet.uploadExamples(20);
  });

  afterEach(async () => {
    await fleet.stopWorkers();
  });

  afterAll(async () => {
    await fleet.stop();
  });

  const workers = async (): Promise<WorkerView[]> =>
    (await fleet.request('GET', '/v1/workers', undefined, adminKey)).body.data as WorkerView[];
  const detail = async (id: string): Promise<JobDetail> =>
    (await fleet.request('GET', `/v1/fine_tuning/jobs/${id}`)).body as JobDetail;

  it('refuses to start on a malformed LORAFLEET_MEMORY_LIMIT_MB (exit 78, naming it)', async () => {
    const worker = new AppProcess('worker', {
      ...fleet.sharedEnv(),
      LORAFLEET_MEMORY_LIMIT_MB: '8GB',
    });
    expect(await worker.waitForExit()).toBe(78);
    expect(worker.text).toMatch(
      /LORAFLEET_MEMORY_LIMIT_MB: must be a positive whole number of MiB/,
    );
  });

  it('fails a run over the memory limit once, with the estimate, the limit and the advice, when no worker has more', async () => {
    fleet.startWorker('w-small', { LORAFLEET_MEMORY_LIMIT_MB: '1' });
    await fleet.workerReady('w-small');
    expect((await workers()).find((w) => w.id === 'w-small')).toMatchObject({
      memory_limit_mb: 1,
    });
    const job = await fleet.createJob(fileId, 5);
    const failed = await detail((await fleet.waitForTerminal(job.id, 60_000)).id);
    expect(failed.status).toBe('failed');
    expect(failed.error).toMatchObject({ code: 'insufficient_memory', param: null });
    expect(failed.error?.message).toMatch(/needs about [\d,]+ MiB but the memory limit is 1 MiB/);
    expect(failed.error?.message).toMatch(/To fit: turn on gradient checkpointing/);
    expect(failed.error?.message).toMatch(/No live worker has a memory limit of \d+ MiB or more/);
    expect(failed.error?.message).not.toMatch(/Aborted/);
    expect(await fleet.row(job.id)).toMatchObject({ attempt: 1, failures: 0, adapters: 0 });
    expect(await fleet.statusTrail(job.id)).toEqual([
      'validating_files',
      'queued',
      'running',
      'failed',
    ]);
  });

  it('hands a run too big for its worker to a live worker with more memory, and the small worker does not take it again', async () => {
    const big = fleet.startWorker('w-big', { LORAFLEET_MEMORY_LIMIT_MB: '100000' });
    fleet.startWorker('w-small-2', { LORAFLEET_MEMORY_LIMIT_MB: '1' });
    await fleet.workerReady('w-big');
    await fleet.workerReady('w-small-2');
    expect(
      Object.fromEntries((await workers()).map((w) => [w.id, w.memory_limit_mb])),
    ).toMatchObject({ 'w-big': 100000, 'w-small-2': 1 });
    // Frozen, the big worker takes no delivery but stays live in the registry (its last
    // heartbeat is recent), so the small worker gets the job first.
    big.signal('SIGSTOP');
    const job = await fleet.createJob(fileId, 5);
    await waitFor(
      'the hand-back',
      async () =>
        (await fleet.messages(job.id)).some((m) => m.startsWith('Handed back')) ? true : undefined,
      60_000,
    );
    // While the big worker is still frozen, the small one is offered the job again and again
    // (the reconciler re-enqueues it): it must pass it on, not claim it.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    expect((await fleet.row(job.id)).attempt).toBe(1);
    big.signal('SIGCONT');
    const done = await fleet.waitForTerminal(job.id, 120_000);
    expect(done.status).toBe('succeeded');
    expect(done.worker).toBe('w-big');
    expect(await fleet.row(job.id)).toMatchObject({ attempt: 2, failures: 0, adapters: 1 });
    expect(await fleet.statusTrail(job.id)).toEqual([
      'validating_files',
      'queued',
      'running',
      'queued',
      'running',
      'succeeded',
    ]);
    const handback = (await fleet.events(job.id)).find((e) => e.message.startsWith('Handed back'));
    expect(handback?.message).toMatch(
      /this run needs about \d+ MiB, over this worker's memory limit of 1 MiB; w-big \(100000 MiB\) can take it/,
    );
    expect(handback?.data).toMatchObject({
      reason: 'insufficient_memory',
      memory_limit_mb: 1,
      worker: 'w-small-2',
    });
  });

  it('fails data whose completions are all cut by max_seq_length once: invalid_file, training.max_seq_length, the counts', async () => {
    fleet.startWorker('w-data');
    await fleet.workerReady('w-data');
    const file = await fleet.uploadLines(
      Array.from({ length: 4 }, (_, i) => ({ prompt: `${LONG_PROMPT} ${i}`, completion: ' ok' })),
    );
    const job = await fleet.createJob(file, 5, { training: { max_seq_length: 8, max_steps: 5 } });
    const failed = await detail((await fleet.waitForTerminal(job.id, 60_000)).id);
    expect(failed.status).toBe('failed');
    expect(failed.error).toMatchObject({ code: 'invalid_file', param: 'training.max_seq_length' });
    expect(failed.error?.message).toMatch(
      /no example has a completion token left to train on at max_seq_length 8: 4 of 4 examples lose every target token/,
    );
    expect(await fleet.row(job.id)).toMatchObject({ attempt: 1, failures: 0, adapters: 0 });
  });

  it('warns when over 20% of examples lose completion tokens, shows the worker busy with the job for the whole run, and records the usage', async () => {
    fleet.startWorker('w-busy');
    await fleet.workerReady('w-busy');
    // 4 of 10 examples have a prompt longer than max_seq_length 32.
    const file = await fleet.uploadLines(
      Array.from({ length: 10 }, (_, i) => ({
        prompt: i < 4 ? `${LONG_PROMPT} ${i}` : `Say ${i}: `,
        completion: `number ${i} ok`,
      })),
    );
    const job = await fleet.createJob(file, 300);
    // Poll the fleet view while the job runs: every look must say busy with this job. The
    // heartbeat (every 500 ms here) used to overwrite it with idle.
    const seen: { status: string; current_job: string | null }[] = [];
    for (;;) {
      const before = await detail(job.id);
      if (TERMINAL.includes(before.status)) break;
      const view = (await workers()).find((w) => w.id === 'w-busy');
      const after = await detail(job.id);
      if (before.status === 'running' && before.progress.step >= 1 && after.status === 'running') {
        seen.push({ status: view?.status ?? '?', current_job: view?.current_job ?? null });
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(seen.length).toBeGreaterThanOrEqual(5);
    expect(seen.filter((s) => s.status !== 'busy' || s.current_job !== job.id)).toEqual([]);
    await waitFor(
      'w-busy idle again',
      async () =>
        (await workers()).find((w) => w.id === 'w-busy')?.status === 'idle' ? true : undefined,
      10_000,
    );

    const done = await detail(job.id);
    expect(done.status).toBe('succeeded');
    expect(done.usage?.peak_memory_mb).toBeGreaterThan(30);
    expect(done.usage?.tokens_per_second).toBeGreaterThan(0);
    const list = await fleet.events(job.id);
    expect(list.find((e) => e.message.startsWith('Pre-flight'))?.message).toMatch(
      /10 examples, .*; memory estimate [\d,]+ MiB of [\d,]+ MiB$/,
    );
    const warning = list.find((e) => e.level === 'warn' && /truncation/.test(e.message));
    expect(warning?.message).toMatch(
      /^4 of 10 examples \(40%\) lose completion tokens to truncation at max_seq_length 32; .*Raise max_seq_length/,
    );
    const usage = list.find((e) => e.type === 'metrics' && e.message.startsWith('Usage'));
    expect(usage?.message).toBe(
      `Usage: peak memory ${done.usage?.peak_memory_mb} MiB, ${Math.round(done.usage!.tokens_per_second!)} tokens/s`,
    );
  });
});
