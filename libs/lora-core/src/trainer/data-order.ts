/**
 * Which examples each optimizer step trains on. An epoch is a seeded permutation of the
 * examples, cut into micro-batches of `batchSize` (the last may be short), grouped by
 * `gradientAccumulationSteps` into optimizer steps (the last group may be partial). This is
 * libs/data's `computeStepsPerEpoch` formula, which the pre-flight reports.
 *
 * The permutation of epoch e is a pure function of (seed, e): a resumed run, or a run on
 * another worker, sees exactly the same order. Checkpoints store the current epoch's order
 * anyway, so a checkpoint stays resumable even if this shuffle ever changes.
 */
import { createHash } from 'node:crypto';

import { computeStepsPerEpoch } from '@lorafleet/data';

import { SeededRandom, deriveSeed } from '../util/rng.util';

/** What the trainer needs of a tokenized example (libs/data's `TokenizedExample` fits). */
export interface TokenizedSequence {
  inputIds: readonly number[];
  /** Aligned with `inputIds`: 1 = this token is a target predicted from the previous one. */
  lossMask: readonly number[];
}

/** Fisher–Yates over 0..n-1 with the epoch's own stream (mulberry32). */
export function epochOrder(seed: number, epoch: number, count: number, shuffle: boolean): number[] {
  const order = Array.from({ length: count }, (_, i) => i);
  if (!shuffle) return order;
  const rng = new SeededRandom(deriveSeed(seed, `shuffle:${epoch}`));
  for (let i = count - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

export interface StepPlan {
  /** Micro-batches of this step, each a list of example indices. */
  microBatches: number[][];
  /** Index into the epoch order of the first example of the next step. */
  nextCursor: number;
}

export class DataSchedule {
  readonly stepsPerEpoch: number;

  constructor(
    readonly exampleCount: number,
    readonly batchSize: number,
    readonly gradientAccumulationSteps: number,
  ) {
    this.stepsPerEpoch = computeStepsPerEpoch(exampleCount, batchSize, gradientAccumulationSteps);
  }

  /** Examples consumed by one full optimizer step. */
  get examplesPerStep(): number {
    return this.batchSize * this.gradientAccumulationSteps;
  }

  /** Order cursor at the start of step `stepInEpoch` (0-based within the epoch). */
  cursorAt(stepInEpoch: number): number {
    return Math.min(stepInEpoch * this.examplesPerStep, this.exampleCount);
  }

  /** The micro-batches of the step that starts at `cursor` in `order`. */
  plan(order: readonly number[], cursor: number): StepPlan {
    const microBatches: number[][] = [];
    let position = cursor;
    for (let k = 0; k < this.gradientAccumulationSteps && position < order.length; k++) {
      const end = Math.min(position + this.batchSize, order.length);
      microBatches.push(order.slice(position, end));
      position = end;
    }
    return { microBatches, nextCursor: position };
  }
}

/** sha256 over token ids and loss masks: what training actually sees (resume must match it). */
export function hashSequences(sequences: readonly TokenizedSequence[]): string {
  const hash = createHash('sha256');
  const header = new Int32Array(1);
  for (const sequence of sequences) {
    header[0] = sequence.inputIds.length;
    hash.update(new Uint8Array(header.buffer));
    hash.update(new Uint8Array(Int32Array.from(sequence.inputIds).buffer));
    hash.update(new Uint8Array(Uint8Array.from(sequence.lossMask)));
  }
  return hash.digest('hex');
}
