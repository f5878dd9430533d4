/**
 * Host arrays → tensors for one micro-batch. Rows are padded on the right to the longest
 * row of the micro-batch (causal attention plus right padding leaves real positions
 * untouched, so padding length never changes a real token's logits).
 */
import * as tf from '@tensorflow/tfjs';

import type { TokenizedSequence } from './data-order';
import { shiftTargets, type ShiftedTargets } from './token-loss';

export interface MicroBatch {
  inputIds: tf.Tensor2D; // [B, T] int32
  /** [B, T] 1 = token, 0 = padding; null when no row is padded (cheaper [1,1,T,T] bias). */
  attentionMask: tf.Tensor2D | null;
  shifted: ShiftedTargets;
  rows: number;
  length: number;
  /** Real (non-padding) tokens. */
  tokens: number;
}

export function buildMicroBatch(
  sequences: readonly TokenizedSequence[],
  indices: readonly number[],
  padTokenId: number,
  vocabSize: number,
): MicroBatch {
  const rows = indices.map((i) => sequences[i]);
  const length = Math.max(...rows.map((r) => r.inputIds.length));
  if (!(length > 0)) throw new RangeError('a micro-batch needs at least one non-empty sequence');
  const ids: number[][] = [];
  const masks: number[][] = [];
  const attention = new Float32Array(rows.length * length);
  let tokens = 0;
  let padded = false;
  rows.forEach((row, b) => {
    const n = row.inputIds.length;
    if (row.lossMask.length !== n) {
      throw new RangeError(
        `sequence ${indices[b]} has ${n} ids but ${row.lossMask.length} mask entries`,
      );
    }
    ids.push([...row.inputIds, ...new Array<number>(length - n).fill(padTokenId)]);
    masks.push([...row.lossMask, ...new Array<number>(length - n).fill(0)]);
    attention.fill(1, b * length, b * length + n);
    tokens += n;
    padded ||= n < length;
  });
  return {
    inputIds: tf.tensor2d(ids, [rows.length, length], 'int32'), // [B, T]
    attentionMask: padded ? tf.tensor2d(attention, [rows.length, length]) : null, // [B, T]
    shifted: shiftTargets(ids, masks, vocabSize),
    rows: rows.length,
    length,
    tokens,
  };
}

export function disposeMicroBatch(batch: MicroBatch): void {
  batch.inputIds.dispose();
  batch.attentionMask?.dispose();
}

/** Scored targets of these sequences (sum of loss-mask entries after position 0). */
export function countTargets(
  sequences: readonly TokenizedSequence[],
  indices: readonly number[],
): number {
  let count = 0;
  for (const i of indices) {
    const mask = sequences[i].lossMask;
    for (let t = 1; t < mask.length; t++) if (mask[t] !== 0) count += 1;
  }
  return count;
}
