/**
 * Cancel right after create (R11, R14): whether the cancel lands while the job waits in BullMQ,
 * as the worker claims it, or while its trainer starts, the job ends `cancelled`, never
 * `failed`, with no adapter, no error and no trainer left behind.
 */
import { isLegalJobTransition, type JobStatus } from '@lorafleet/contracts';
import { Fleet, type JobView } from './fleet-harness';
import { waitFor } from '@lorafleet/testing';

jest.setTimeout(180_000);

/** Delays between the 201 of the create and the cancel, around the worker's pick-up. */
const CANCEL_DELAYS_MS = [0, 0, 5, 20, 40, 75, 110, 160, 220, 300];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('cancel immediately after create', () => {
  const fleet = new Fleet();
  let fileId: string;

  beforeAll(async () => {
    await fleet.start();
    fileId = await fleet.uploadExamples(8);
  });

  afterAll(async () => {
    await fleet.stop();
  });

  const expectCancelled = async (job: JobView, what: string): Promise<string[]> => {
    const final = await fleet.job(job.id);
    const trail = await fleet.statusTrail(job.id);
    expect({ what, status: final.status, error: final.error, adapter: final.adapter_id }).toEqual({
      what,
      status: 'cancelled',
      error: null,
      adapter: null,
    });
    expect((await fleet.row(job.id)).adapters).toBe(0);
    expect({ what, trail }).toEqual({ what, trail: expect.not.arrayContaining(['failed']) });
    expect(trail[trail.length - 1]).toBe('cancelled');
    for (let t = 1; t < trail.length; t++) {
      expect(isLegalJobTransition(trail[t - 1] as JobStatus, trail[t] as JobStatus)).toBe(true);
    }
    return trail;
  };

  it(`ends every job cancelled with no adapter (${CANCEL_DELAYS_MS.length} picked-up jobs cancelled after 0–300 ms, ${CANCEL_DELAYS_MS.length} cancelled while waiting behind them)`, async () => {
    const worker = fleet.startWorker('w-cancel-race');
    await fleet.workerReady('w-cancel-race');
    const pickedUp: JobView[] = [];
    const waiting: JobView[] = [];
    const cancel = async (job: JobView) => {
      const response = await fleet.request('POST', `/v1/fine_tuning/jobs/${job.id}/cancel`);
      expect({ job: job.id, status: response.status, state: response.body.status }).toEqual({
        job: job.id,
        status: 200,
        state: 'cancelled',
      });
    };
    for (const delayMs of CANCEL_DELAYS_MS) {
      // The worker (concurrency 1) takes `first` at once; `second` waits in BullMQ behind it
      // and is cancelled there, before any pick-up.
      const started = Date.now();
      const first = await fleet.createJob(fileId, 200);
      const second = await fleet.createJob(fileId, 200);
      await cancel(second);
      await sleep(Math.max(0, started + delayMs - Date.now()));
      await cancel(first);
      pickedUp.push(first);
      waiting.push(second);
      // Let the worker finish with both (kill the trainer, skip the cancelled delivery) before
      // the next pair, so each cancel races a pick-up rather than a queue.
      await sleep(700);
      await waitFor(
        'the worker to let go of the cancelled jobs',
        () => (worker.childPids().length === 0 ? true : undefined),
        10_000,
        20,
      );
    }
    // Outlast the control poll and any delivery still in flight, then read the record.
    await sleep(1500);
    expect(worker.childPids()).toEqual([]);
    for (const [i, job] of pickedUp.entries()) {
      await expectCancelled(job, `picked up, cancelled after ${CANCEL_DELAYS_MS[i]} ms`);
    }
    for (const job of waiting) {
      expect(await expectCancelled(job, 'cancelled while waiting')).toEqual([
        'validating_files',
        'queued',
        'cancelled',
      ]);
      expect((await fleet.row(job.id)).attempt).toBe(0);
    }
    // The worker is still healthy and nothing failed: the next job trains to the end.
    const next = await fleet.createJob(fileId, 3);
    expect((await fleet.waitForTerminal(next.id)).status).toBe('succeeded');
    expect(worker.output.join('')).not.toMatch(/failed/);
  });
});
