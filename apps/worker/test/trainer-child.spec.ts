/**
 * The real trainer child (the built `trainer-child.js`, real tfjs on the cpu backend, the
 * shipped tiny GPT-2): a checkpoint it cannot resume restarts the run from step 0 with a
 * warning, and gives the same adapter a fresh run gives, instead of failing every attempt.
 */
import path from 'node:path';
import { resolveFineTuneSpec } from '@lorafleet/data';
import { TrainerProcess, forkTrainerChild } from '../src/trainer/trainer-process';
import type { TrainerResult, TrainerSpec } from '../src/trainer/trainer-protocol';

const REPO = path.resolve(__dirname, '../../..');
const CHILD = path.join(REPO, 'apps/worker/dist/trainer/trainer-child.js');
const MODEL_DIR = path.join(REPO, 'models/tiny-random-gpt2');

const trainingJsonl = Array.from({ length: 8 }, (_, i) =>
  JSON.stringify({ prompt: `count ${i} `, completion: `${i + 1} ${i + 2}` }),
).join('\n');

function trainerSpec(resumeFrom: Uint8Array | null): TrainerSpec {
  return {
    jobId: 'ftjob-restart',
    modelName: 'tiny-random-gpt2',
    modelDir: MODEL_DIR,
    baseModelHash: 'not-checked-here',
    trainingJsonl,
    validationJsonl: null,
    spec: resolveFineTuneSpec(
      {
        seed: 5,
        hyperparameters: { n_epochs: 1, batch_size: 4 },
        lora: { r: 2 },
        training: { learning_rate: 1e-2, max_seq_length: 32 },
      },
      { model: 'tiny-random-gpt2', contextLength: 64, trainingExamples: 8 },
    ),
    backend: 'cpu',
    checkpointEverySteps: 1000,
    checkpointEverySeconds: 3600,
    resumeFrom,
    memoryLimitMb: null,
  };
}

async function train(
  resumeFrom: Uint8Array | null,
): Promise<{ result: TrainerResult; warnings: string[]; resumedFrom: (number | null)[] }> {
  const warnings: string[] = [];
  const resumedFrom: (number | null)[] = [];
  const outcome = await new TrainerProcess(
    trainerSpec(resumeFrom),
    {
      onWarning: (message) => warnings.push(message),
      onReady: (_backend, step) => resumedFrom.push(step),
      onCheckpoint: () => Promise.resolve(),
    },
    forkTrainerChild(CHILD),
  ).outcome;
  if (outcome.kind !== 'succeeded') throw new Error(`expected success: ${JSON.stringify(outcome)}`);
  return { result: outcome.result, warnings, resumedFrom };
}

describe('trainer child (real tfjs): a checkpoint it cannot resume', () => {
  it('restarts from step 0 with a warning and gives the adapter of a fresh run', async () => {
    const fresh = await train(null);
    expect(fresh.warnings).toEqual([]);
    const restarted = await train(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9]));
    expect(restarted.warnings).toEqual([
      expect.stringMatching(
        /^The job's checkpoint could not be resumed \(checkpoint is not a readable safetensors blob.*\); training restarts from step 0\.$/,
      ),
    ]);
    expect(restarted.resumedFrom).toEqual([null]);
    expect(restarted.result.steps).toBe(fresh.result.steps);
    expect(Buffer.from(restarted.result.adapterSafetensors)).toEqual(
      Buffer.from(fresh.result.adapterSafetensors),
    );
  }, 120_000);
});
