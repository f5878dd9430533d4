import path from 'node:path';
import { isDatabaseUnavailable, retryWhileDatabaseDown } from '../src/processor/db-retry';
import {
  TrainerProcess,
  forkTrainerChild,
  type TrainerOutcome,
} from '../src/trainer/trainer-process';
import type { TrainerCheckpoint, TrainerSpec } from '../src/trainer/trainer-protocol';

const FAKE_TRAINER = path.join(__dirname, 'fixtures/scripted-trainer.js');

const spec = {} as TrainerSpec; // the scripted child ignores the spec

function start(script: string, stored: TrainerCheckpoint[] = []): TrainerProcess {
  process.env.SCRIPTED_TRAINER = script;
  return new TrainerProcess(
    spec,
    {
      onCheckpoint: async (checkpoint) => {
        await new Promise((resolve) => setTimeout(resolve, 50)); // a slow database write
        stored.push(checkpoint);
      },
    },
    forkTrainerChild(FAKE_TRAINER),
  );
}

function failureOf(outcome: TrainerOutcome) {
  if (outcome.kind !== 'failed') throw new Error(`expected a failure, got ${outcome.kind}`);
  return outcome.failure;
}

describe('TrainerProcess (IPC with a scripted child process)', () => {
  it('succeeds with the result only after earlier checkpoints are stored', async () => {
    const stored: TrainerCheckpoint[] = [];
    const outcome = await start('result', stored).outcome;
    expect(stored.map((c) => c.step)).toEqual([1]);
    if (outcome.kind !== 'succeeded') throw new Error(`expected success, got ${outcome.kind}`);
    expect(Array.from(outcome.result.adapterSafetensors)).toEqual([7, 7]);
  });

  it('reports bad input as the child classified it, and a crash as retryable', async () => {
    expect(await start('bad-input').outcome).toEqual({
      kind: 'failed',
      failure: { kind: 'invalid_input', message: 'line 3: not JSON', param: null },
    });
    expect(failureOf(await start('crash').outcome)).toMatchObject({
      kind: 'retryable',
      message: expect.stringMatching(/code 3/),
    });
  });

  it('reports a wasm abort or a heap death as out of memory, never as Aborted(), and not retryable', async () => {
    for (const script of ['wasm-abort', 'heap-oom']) {
      const failure = failureOf(await start(script).outcome);
      expect(failure.kind).toBe('out_of_memory');
      expect(failure.message).toMatch(/ran out of memory.*gradient checkpointing/);
      expect(failure.message).not.toMatch(/Aborted/);
    }
  });

  it('stops on request after storing the final checkpoint', async () => {
    const stored: TrainerCheckpoint[] = [];
    const trainer = start('wait', stored);
    await new Promise((resolve) => setTimeout(resolve, 300));
    trainer.requestStop('pause');
    expect(await trainer.outcome).toEqual({ kind: 'stopped', reason: 'pause' });
    expect(stored.map((c) => c.step)).toEqual([2]);
  });

  it('keeps only the newest waiting checkpoint while a write is slow, and stops after it', async () => {
    const stored: TrainerCheckpoint[] = [];
    const trainer = start('burst', stored);
    expect(await trainer.outcome).toEqual({ kind: 'stopped', reason: 'pause' });
    // Step 1 was being written (50 ms) while 2–6 arrived; 6 replaced 2–5 in the waiting slot.
    expect(stored.map((c) => c.step)).toEqual([1, 6]);
    expect(trainer.checkpointsSuperseded).toBe(4);
  });

  it('ends with the error of a failed checkpoint write instead of the result', async () => {
    process.env.SCRIPTED_TRAINER = 'result';
    const trainer = new TrainerProcess(
      spec,
      {
        onCheckpoint: () => Promise.reject(new Error('checkpoint store refused')),
      },
      forkTrainerChild(FAKE_TRAINER),
    );
    expect(failureOf(await trainer.outcome)).toEqual({
      kind: 'retryable',
      message: 'checkpoint store refused',
      param: null,
    });
  });

  it('reports a kill with its reason, and tracks silence for the watchdog', async () => {
    const trainer = start('wait');
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(trainer.silentForMs).toBeGreaterThanOrEqual(0);
    trainer.kill('cancelled');
    expect(await trainer.outcome).toEqual({ kind: 'killed', reason: 'cancelled' });
  });
});

describe('database retry', () => {
  it('tells outages from other errors', () => {
    expect(
      isDatabaseUnavailable(
        Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }),
      ),
    ).toBe(true);
    expect(isDatabaseUnavailable(new Error('Connection terminated unexpectedly'))).toBe(true);
    expect(
      isDatabaseUnavailable(Object.assign(new Error('duplicate key'), { code: '23505' })),
    ).toBe(false);
    expect(isDatabaseUnavailable('nope')).toBe(false);
  });

  it('retries a write through an outage and gives up on other errors', async () => {
    let calls = 0;
    const value = await retryWhileDatabaseDown(() => {
      calls++;
      if (calls < 3)
        return Promise.reject(Object.assign(new Error('down'), { code: 'ECONNRESET' }));
      return Promise.resolve('stored');
    });
    expect({ value, calls }).toEqual({ value: 'stored', calls: 3 });
    await expect(
      retryWhileDatabaseDown(() => Promise.reject(new Error('syntax error'))),
    ).rejects.toThrow('syntax error');
  });
});
