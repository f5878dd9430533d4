/**
 * Finiteness checks for weights read from disk. A NaN or an infinity in a weight file does
 * not fail anything by itself: it flows through every product into `null` logits, merged
 * models full of NaN, and a training run that reports "diverged" for a problem no learning
 * rate can fix. Loaders refuse such a file up front, naming the tensor.
 */

/** The largest float32 value: tfjs computes in float32, so anything above it is infinite there. */
export const FLOAT32_MAX = 3.4028234663852886e38;

/** Index of the first NaN or ±Infinity in `data`, or -1 when every value is finite (one pass). */
export function indexOfNonFinite(data: Float32Array): number {
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    // v − v is 0 for every finite v and NaN for NaN and ±Infinity: one subtraction a value.
    if (v - v !== 0) return i;
  }
  return -1;
}

/** Largest absolute value of `data` (0 when empty); only meaningful for finite data. */
export function maxAbs(data: Float32Array): number {
  let max = 0;
  for (let i = 0; i < data.length; i++) {
    const a = Math.abs(data[i]);
    if (a > max) max = a;
  }
  return max;
}

/** The value at `index` as text for an error message (`NaN`, `Infinity`, `-Infinity`). */
export function describeValueAt(data: Float32Array, index: number): string {
  return `${String(data[index])} at flat index ${index}`;
}
