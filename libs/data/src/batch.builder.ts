/** Right-padded rectangular arrays for one micro-batch, ready to become `[B, T]` tensors. */
export interface TrainingBatch {
  /** `[B, T]` token ids; positions past an example's end hold `padTokenId`. */
  inputIds: number[][];
  /** `[B, T]` 1 on real tokens, 0 on padding. */
  attentionMask: number[][];
  /**
   * `[B, T]` aligned with `inputIds` like `TokenizedExample.lossMask`: `lossMask[b][t] === 1`
   * means `inputIds[b][t]` is a target, predicted from position `t - 1`. 0 on padding.
   */
  lossMask: number[][];
}

export interface BuildBatchOptions {
  padTokenId: number;
  /**
   * Pad every row to this length instead of the longest example's, e.g. `maxSeqLength`, so the
   * trainer sees one tensor shape (tfjs recompiles kernels per shape). Must cover every example.
   */
  padToLength?: number;
}

/** Pads examples on the right into one batch. The input arrays are not modified. */
export function buildBatch(
  examples: readonly { inputIds: readonly number[]; lossMask: readonly number[] }[],
  options: BuildBatchOptions,
): TrainingBatch {
  let longest = 0;
  examples.forEach((example, index) => {
    if (example.inputIds.length !== example.lossMask.length) {
      throw new RangeError(
        `example ${index} has ${example.inputIds.length} ids but ${example.lossMask.length} mask entries`,
      );
    }
    longest = Math.max(longest, example.inputIds.length);
  });
  const length = options.padToLength ?? longest;
  if (!Number.isInteger(length) || length < longest) {
    throw new RangeError(`padToLength ${length} is shorter than the longest example (${longest})`);
  }
  const batch: TrainingBatch = { inputIds: [], attentionMask: [], lossMask: [] };
  for (const example of examples) {
    const pad = length - example.inputIds.length;
    batch.inputIds.push([...example.inputIds, ...new Array<number>(pad).fill(options.padTokenId)]);
    batch.attentionMask.push([
      ...new Array<number>(example.inputIds.length).fill(1),
      ...new Array<number>(pad).fill(0),
    ]);
    batch.lossMask.push([...example.lossMask, ...new Array<number>(pad).fill(0)]);
  }
  return batch;
}
