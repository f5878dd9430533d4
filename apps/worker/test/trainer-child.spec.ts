/**
 * The real trainer child (the built `trainer-child.js`, real tfjs on the cpu and wasm backends,
 * the shipped tiny GPT-2): a checkpoint it cannot resume restarts the run from step 0 with a
 * warning, and gives the same adapter a fresh run gives, instead of failing every attempt. A
 * DPO job trains on preference pairs, reports its reward metrics in progress, evaluations,
 * checkpoints and the result, and resumes from its checkpoint byte-identical.
 */
import path from 'node:path';
import { resolveFineTuneSpec } from '@lorafleet/data';
import { TrainerProcess, forkTrainerChild } from '../src/trainer/trainer-process';
import type {
  TrainerCheckpoint,
  TrainerProgress,
  TrainerResult,
  TrainerSpec,
} from '../src/trainer/trainer-protocol';

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

const preferenceJsonl = [
  ['Say hi', 'hi', 'no'],
  ['Sky color?', 'blue', 'green'],
  ['The quick brown', 'fox', 'cat'],
  ['Two plus two', 'four', 'five'],
]
  .map(([prompt, chosen, rejected]) =>
    JSON.stringify({
      input: { messages: [{ role: 'user', content: prompt }] },
      preferred_output: [{ role: 'assistant', content: chosen }],
      non_preferred_output: [{ role: 'assistant', content: rejected }],
    }),
  )
  .join('\n');

function dpoTrainerSpec(resumeFrom: Uint8Array | null): TrainerSpec {
  return {
    ...trainerSpec(resumeFrom),
    jobId: 'ftjob-dpo',
    trainingJsonl: preferenceJsonl,
    validationJsonl: preferenceJsonl,
    spec: resolveFineTuneSpec(
      {
        seed: 11,
        method: { type: 'dpo', beta: 0.2 },
        hyperparameters: { n_epochs: 2, batch_size: 2 },
        lora: { r: 2, dropout: 0.1 },
        training: { learning_rate: 2e-2, max_seq_length: 48, eval_every_steps: 2 },
      },
      { model: 'tiny-random-gpt2', contextLength: 64, trainingExamples: 4 },
    ),
    backend: 'wasm',
    checkpointEverySteps: 1,
  };
}

async function trainDpo(resumeFrom: Uint8Array | null) {
  const progress: TrainerProgress[] = [];
  const evals: Record<string, number>[] = [];
  const checkpoints: TrainerCheckpoint[] = [];
  const outcome = await new TrainerProcess(
    dpoTrainerSpec(resumeFrom),
    {
      onProgress: (p) => progress.push(p),
      onEval: (_step, metrics) => evals.push(metrics),
      onCheckpoint: (checkpoint) => {
        checkpoints.push(checkpoint);
        return Promise.resolve();
      },
    },
    forkTrainerChild(CHILD),
  ).outcome;
  if (outcome.kind !== 'succeeded') throw new Error(`expected success: ${JSON.stringify(outcome)}`);
  return { result: outcome.result, progress, evals, checkpoints };
}

describe('trainer child (real tfjs): a DPO job', () => {
  it('reports DPO metrics everywhere and resumes from its checkpoint byte-identical', async () => {
    const full = await trainDpo(null);
    expect(full.result.steps).toBe(4);
    const last = full.progress[full.progress.length - 1];
    expect(last).toMatchObject({ step: 4, totalSteps: 4 });
    expect(last.meanTokenAccuracy).toBeUndefined();
    expect(Object.keys(last.dpo ?? {}).sort()).toEqual([
      'rewardsAccuracy',
      'rewardsChosen',
      'rewardsMargin',
      'rewardsRejected',
    ]);
    expect(full.evals).toHaveLength(2);
    expect(Object.keys(full.evals[1]).sort()).toEqual([
      'valid_loss',
      'valid_rewards_accuracy',
      'valid_rewards_chosen',
      'valid_rewards_margin',
      'valid_rewards_rejected',
    ]);
    expect(full.checkpoints.map((c) => c.step)).toEqual([1, 2, 3, 4]);
    expect(full.checkpoints[1].metrics).toEqual({
      train_loss: expect.any(Number),
      train_rewards_chosen: expect.any(Number),
      train_rewards_rejected: expect.any(Number),
      train_rewards_margin: expect.any(Number),
      train_rewards_accuracy: expect.any(Number),
      valid_loss: full.evals[0].valid_loss,
      valid_rewards_chosen: full.evals[0].valid_rewards_chosen,
      valid_rewards_rejected: full.evals[0].valid_rewards_rejected,
      valid_rewards_margin: full.evals[0].valid_rewards_margin,
      valid_rewards_accuracy: full.evals[0].valid_rewards_accuracy,
    });
    expect(full.result.metrics).toMatchObject({
      valid_loss: expect.any(Number),
      valid_rewards_margin: expect.any(Number),
    });
    expect(full.result.metrics.valid_mean_token_accuracy).toBeUndefined();
    expect(full.result.resultCsv.split('\n')[0]).toContain('train_rewards_margin');
    expect(full.result.lineage.spec.method).toEqual({ type: 'dpo', beta: 0.2 });

    // A crash after step 2: the next attempt resumes from the stored checkpoint.
    const resumed = await trainDpo(full.checkpoints[1].blob);
    expect(resumed.progress[0].step).toBe(3);
    expect(Buffer.from(resumed.result.adapterSafetensors)).toEqual(
      Buffer.from(full.result.adapterSafetensors),
    );
  }, 120_000);
});
