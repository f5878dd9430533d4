/**
 * The training loop running DPO (issue 20) on real tfjs (wasm) with a tiny GPT-2 and the
 * tiny-random-gpt2 tokenizer: preference JSONL in, PEFT adapter out. The loss falls and the
 * reward margin grows; the same seed gives the same bytes; a run resumed from a mid-run
 * checkpoint ends byte-identical; β is part of the run's identity; validation reports DPO
 * metrics; the wrong kind of data is refused.
 */
import * as tf from '@tensorflow/tfjs';
import { FineTuneSpecSchema, type FineTuneSpec } from '@lorafleet/contracts';
import { DatasetValidationError } from '@lorafleet/data';

import {
  CheckpointError,
  DPO_METRICS_CSV_COLUMNS,
  METRICS_CSV_COLUMNS,
  Trainer,
  TrainingConfigError,
  decodeCheckpoint,
  runFineTune,
  selectBackend,
  type FineTuneOptions,
  type StepMetrics,
  type TrainerCheckpointEvent,
  type TrainingProgress,
} from '../src';
import { pairsJsonl, testSpec, tinyGpt2, tinyTokenizer, tokenizedPairs } from './trainer.helpers';

jest.setTimeout(120_000);

function preferenceLine(prompt: string, chosen: string, rejected: string): string {
  return JSON.stringify({
    input: { messages: [{ role: 'user', content: prompt }] },
    preferred_output: [{ role: 'assistant', content: chosen }],
    non_preferred_output: [{ role: 'assistant', content: rejected }],
  });
}

const PREFERENCES = [
  preferenceLine('Say hi', 'hi', 'no'),
  preferenceLine('Sky color?', 'blue', 'green'),
  preferenceLine('The quick brown', 'fox', 'cat'),
  preferenceLine('Say yes', 'yes', 'never'),
  preferenceLine('Two plus two', 'four', 'five'),
  preferenceLine('Capital of France', 'Paris', 'Rome'),
];
const TRAIN_JSONL = `${PREFERENCES.join('\n')}\n`;
const VALIDATION_JSONL = `${PREFERENCES.slice(0, 3).join('\n')}\n`;

/**
 * A DPO spec that exercises what could break exact resume: accumulation over a partial last
 * group, adapter dropout, cosine with warmup, weight decay and clipping. 6 pairs in
 * micro-batches of 2, 2 per step: 2 steps per epoch.
 */
function dpoSpec(
  changes: { beta?: number; seed?: number; epochs?: number; lr?: number } = {},
): FineTuneSpec {
  const base = testSpec({
    seed: changes.seed ?? 2024,
    lora: { r: 4, alpha: 8, dropout: 0.1, target_modules: ['c_attn', 'c_fc'] },
    hyperparameters: { n_epochs: changes.epochs ?? 3, batch_size: 2 },
    training: {
      gradient_accumulation_steps: 2,
      learning_rate: changes.lr ?? 2e-2,
      lr_scheduler: 'cosine',
      warmup_steps: 1,
      weight_decay: 0.01,
      max_grad_norm: 1,
    },
  });
  return FineTuneSpecSchema.parse({ ...base, method: { type: 'dpo', beta: changes.beta ?? 0.1 } });
}

async function fineTuneDpo(overrides: Partial<FineTuneOptions> = {}) {
  return runFineTune({
    model: { model: tinyGpt2(), tokenizer: await tinyTokenizer(), name: 'tiny-gpt2' },
    trainJsonl: TRAIN_JSONL,
    spec: dpoSpec(),
    samples: false,
    ...overrides,
  });
}

/** Metrics without wall-clock fields, for comparing runs. */
function deterministicRows(metrics: readonly StepMetrics[]) {
  return metrics.map(({ tokensPerSecond: _t, ...rest }) => rest);
}

const bytesEqual = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

describe('the trainer loop running DPO (wasm)', () => {
  beforeAll(async () => {
    expect(await selectBackend('wasm')).toBe('wasm');
  });

  it('learns the preferences: the loss falls from log 2 and the reward margin grows; validation, CSV and samples report DPO', async () => {
    const progress: TrainingProgress[] = [];
    const preflights: unknown[] = [];
    const tensorsAfterStep: number[] = [];
    const result = await fineTuneDpo({
      spec: { ...dpoSpec({ epochs: 4 }), training: { ...dpoSpec().training, eval_every_steps: 4 } },
      validationJsonl: VALIDATION_JSONL,
      samples: { count: 1, maxNewTokens: 3 },
      onProgress: (p) => {
        progress.push(p);
        tensorsAfterStep.push(tf.memory().numTensors);
      },
      onPreflight: (p) => void preflights.push(p),
    });
    // Every step disposes what it made (the reference pass, both sides, the gradients).
    expect(new Set(tensorsAfterStep).size).toBe(1);
    expect(preflights).toEqual([
      expect.objectContaining({ examples: 6, totalSteps: 8, validationExamples: 3 }),
    ]);
    expect(result.steps).toBe(8);
    const first = result.metrics[0];
    const last = result.metrics[result.metrics.length - 1];
    // Step 1 has learning rate 0 (warmup) and B = 0: the policy is the reference.
    expect(first.trainLoss).toBeCloseTo(Math.log(2), 5);
    expect(first.dpo).toEqual({
      rewardsChosen: 0,
      rewardsRejected: 0,
      rewardsMargin: 0,
      rewardsAccuracy: 0,
    });
    expect(first.trainMeanTokenAccuracy).toBeUndefined();
    expect(last.trainLoss).toBeLessThan(first.trainLoss - 0.05);
    expect(last.dpo!.rewardsMargin).toBeGreaterThan(0.1);
    expect(last.dpo!.rewardsAccuracy).toBeGreaterThanOrEqual(0.5);
    expect(last.dpo!.rewardsMargin).toBeCloseTo(
      last.dpo!.rewardsChosen - last.dpo!.rewardsRejected,
      6,
    );
    // Progress carries the DPO metrics, and no token accuracy.
    expect(progress).toHaveLength(8);
    expect(progress[7]).toMatchObject({ step: 8, totalSteps: 8, dpo: last.dpo });
    expect(progress[7].meanTokenAccuracy).toBeUndefined();
    // Periodic validation on the pairs (every 4 steps) reports DPO loss and rewards.
    expect(result.metrics.map((m) => m.validDpo !== undefined)).toEqual([
      false,
      false,
      false,
      true,
      false,
      false,
      false,
      true,
    ]);
    expect(result.metrics[7].validLoss).toBeCloseTo(result.validation!.loss, 5);
    // Final validation over the 3 pairs (the first three training pairs): learned too.
    expect(result.validation).toMatchObject({ examples: 3 });
    expect(result.validation!.loss).toBeLessThan(Math.log(2));
    expect(result.validation!.dpo!.rewardsMargin).toBeGreaterThan(0);
    expect(result.samples).toHaveLength(1);
    expect(result.samples[0].reference).toContain('hi');

    const lines = result.metricsCsv.trim().split('\n');
    expect(lines[0]).toBe([...METRICS_CSV_COLUMNS, ...DPO_METRICS_CSV_COLUMNS].join(','));
    const header = lines[0].split(',');
    const lastRow = lines[lines.length - 1].split(',');
    expect(lastRow[header.indexOf('train_mean_token_accuracy')]).toBe('');
    expect(Number(lastRow[header.indexOf('train_rewards_margin')])).toBeCloseTo(
      last.dpo!.rewardsMargin,
      5,
    );
    expect(Number(lastRow[header.indexOf('full_valid_rewards_accuracy')])).toBe(
      result.validation!.dpo!.rewardsAccuracy,
    );
  });

  it('same seed gives the same adapter bytes; another seed or β does not', async () => {
    const spec = dpoSpec({ epochs: 1 });
    const a = await fineTuneDpo({ spec });
    const b = await fineTuneDpo({ spec });
    const otherSeed = await fineTuneDpo({ spec: dpoSpec({ epochs: 1, seed: 7 }) });
    const otherBeta = await fineTuneDpo({ spec: dpoSpec({ epochs: 1, beta: 0.5 }) });
    expect(bytesEqual(a.adapter.adapterSafetensors, b.adapter.adapterSafetensors)).toBe(true);
    expect(deterministicRows(a.metrics)).toEqual(deterministicRows(b.metrics));
    expect(bytesEqual(a.adapter.adapterSafetensors, otherSeed.adapter.adapterSafetensors)).toBe(
      false,
    );
    expect(bytesEqual(a.adapter.adapterSafetensors, otherBeta.adapter.adapterSafetensors)).toBe(
      false,
    );
    expect(a.lineage.config_sha256).not.toBe(otherBeta.lineage.config_sha256);
  });

  it('resumes from a mid-run checkpoint byte-identical; the checkpoint records the method and refuses another β', async () => {
    const spec = dpoSpec({ epochs: 2 });
    const checkpoints: TrainerCheckpointEvent[] = [];
    const full = await fineTuneDpo({
      spec,
      checkpoint: { everySteps: 1, sink: (c) => void checkpoints.push(c) },
    });
    expect(checkpoints.map((c) => c.step)).toEqual([1, 2, 3, 4]);
    expect(checkpoints[0].metrics?.dpo).toBeDefined();
    // Step 3 is inside epoch 2: a reshuffled order and a cursor mid-epoch.
    const middle = checkpoints[2];
    const state = decodeCheckpoint(middle.blob).state;
    expect(state.config).toMatchObject({ method: { type: 'dpo', beta: 0.1 } });
    expect(state.data.trainExamples).toBe(6);

    const resumed = await fineTuneDpo({ spec, resumeFrom: middle.blob });
    expect(resumed.resumedFromStep).toBe(3);
    expect(bytesEqual(resumed.adapter.adapterSafetensors, full.adapter.adapterSafetensors)).toBe(
      true,
    );
    expect(deterministicRows(resumed.metrics)).toEqual(deterministicRows(full.metrics));

    const refused = await fineTuneDpo({
      spec: dpoSpec({ epochs: 2, beta: 0.2 }),
      resumeFrom: middle.blob,
    }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(CheckpointError);
    expect((refused as Error).message).toMatch(/differs in: method/);
  });

  it('refuses data of the other kind, and pairs without a DPO spec', async () => {
    // An SFT file for a DPO run, and a preference file for a supervised one: line-numbered.
    await expect(fineTuneDpo({ trainJsonl: pairsJsonl() })).rejects.toThrow(DatasetValidationError);
    await expect(
      fineTuneDpo({ spec: testSpec({ hyperparameters: { n_epochs: 1 } }) }),
    ).rejects.toThrow(DatasetValidationError);
    const model = tinyGpt2();
    try {
      model.addAdapter(
        'default',
        { r: 4, alpha: 8, dropout: 0, targetModules: ['c_attn'], useRslora: false },
        1,
      );
      const sequences = await tokenizedPairs();
      expect(
        () =>
          new Trainer({
            model,
            pairs: { train: [{ chosen: sequences[0], rejected: sequences[1] }] },
            padTokenId: 268,
            spec: testSpec(),
          }),
      ).toThrow(TrainingConfigError);
      expect(
        () => new Trainer({ model, train: sequences, padTokenId: 268, spec: dpoSpec() }),
      ).toThrow('a DPO run trains on preference pairs');
    } finally {
      model.dispose();
    }
  });
});
