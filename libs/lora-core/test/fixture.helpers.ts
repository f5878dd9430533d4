import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';

import { readSafetensors } from '../src';

export const FIXTURES = join(__dirname, 'fixtures');

export interface FixtureInputs {
  input_ids: number[][];
  /** Right padding, used with the adapter. */
  attention_mask: number[][];
  /** Left padding, used for the masked base logits. */
  left_padded_attention_mask: number[][];
  loss_mask: number[][];
}

export function readInputs(name: string): FixtureInputs {
  return JSON.parse(readFileSync(join(FIXTURES, `${name}-inputs.json`), 'utf8')) as FixtureInputs;
}

export function readExpected(name: string): Map<string, { shape: number[]; data: Float32Array }> {
  return readSafetensors(readFileSync(join(FIXTURES, `${name}-expected.safetensors`))).tensors;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

/** ‖a − b‖ / ‖b‖. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num) / Math.sqrt(den);
}

export function ids2d(rows: number[][]): tf.Tensor2D {
  return tf.tensor2d(rows, undefined, 'int32');
}
