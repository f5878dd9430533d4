/**
 * Conversions from the reduced-precision float formats that Hugging Face checkpoints ship
 * in (F16, BF16) to the F32 that every tfjs backend computes in.
 */

/** Bytes per element for every dtype name the safetensors format defines. */
export const DTYPE_BYTES: Readonly<Record<string, number>> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
};

/** The dtypes this reader converts to F32; the others are recognised but rejected. */
export type ReadableDtype = 'F32' | 'F16' | 'BF16' | 'F64';

export function isReadableDtype(dtype: string): dtype is ReadableDtype {
  return dtype === 'F32' || dtype === 'F16' || dtype === 'BF16' || dtype === 'F64';
}

// 64 KiB lookup table: one entry per half-precision bit pattern. Built once; decoding a
// 1B-parameter F16 checkpoint through a table is several times faster than bit twiddling.
let f16Table: Float32Array | undefined;

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024); // subnormal or zero
  if (exponent === 0x1f) return fraction ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

function getF16Table(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) f16Table[i] = halfToFloat(i);
  }
  return f16Table;
}

/**
 * Decodes `count` little-endian elements of `dtype` starting at `bytes[offset]` into a new
 * Float32Array. The input may be unaligned (safetensors only aligns the header to 8 bytes,
 * and callers pass sub-arrays), so reads go through a DataView unless alignment allows a copy.
 */
export function decodeToFloat32(
  bytes: Uint8Array,
  offset: number,
  count: number,
  dtype: ReadableDtype,
): Float32Array {
  const out = new Float32Array(count);
  const start = bytes.byteOffset + offset;
  switch (dtype) {
    case 'F32': {
      // Copy the raw bytes: the result must not alias the caller's buffer.
      new Uint8Array(out.buffer).set(bytes.subarray(offset, offset + count * 4));
      if (!IS_LITTLE_ENDIAN) byteSwapInPlace(new Uint8Array(out.buffer), 4);
      return out;
    }
    case 'F64': {
      const view = new DataView(bytes.buffer, start, count * 8);
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(i * 8, true);
      return out;
    }
    case 'F16': {
      const table = getF16Table();
      const view = new DataView(bytes.buffer, start, count * 2);
      for (let i = 0; i < count; i++) out[i] = table[view.getUint16(i * 2, true)];
      return out;
    }
    case 'BF16': {
      // BF16 is the top half of an F32: shift the 16 bits into place and reinterpret.
      const bits = new Uint32Array(out.buffer);
      const view = new DataView(bytes.buffer, start, count * 2);
      for (let i = 0; i < count; i++) bits[i] = view.getUint16(i * 2, true) << 16;
      return out;
    }
  }
}

const IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function byteSwapInPlace(bytes: Uint8Array, width: number): void {
  for (let i = 0; i < bytes.length; i += width) bytes.subarray(i, i + width).reverse();
}

/** Little-endian bytes of an F32 array (a copy, so the caller may keep mutating `data`). */
export function float32ToLittleEndianBytes(data: Float32Array): Uint8Array {
  const out = new Uint8Array(data.byteLength);
  out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  if (!IS_LITTLE_ENDIAN) byteSwapInPlace(out, 4);
  return out;
}
