/** Host-side matrix helpers (no tfjs). */

/** [rows, cols] row-major → [cols, rows] row-major. */
export function transpose2d(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    const rowOffset = i * cols;
    for (let j = 0; j < cols; j++) out[j * rows + i] = data[rowOffset + j];
  }
  return out;
}
