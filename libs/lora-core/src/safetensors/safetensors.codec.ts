/**
 * Reader and writer for the safetensors format (https://github.com/huggingface/safetensors,
 * format spec in its README): an 8-byte little-endian header length N, N bytes of UTF-8
 * JSON `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {...}}`, then
 * the tensor bytes, offsets relative to the end of the header.
 *
 * Validation mirrors the reference Rust crate: a header above 100 MB, a header running past
 * the buffer, offsets that overlap or leave holes, a byte range that disagrees with
 * dtype × shape, or a data section of the wrong total length are all rejected with a
 * `SafetensorsError` before any tensor memory is allocated. No other exception escapes
 * for any input bytes (the fuzz test holds this).
 */
import { SafetensorsError } from './safetensors.error';
import {
  DTYPE_BYTES,
  decodeToFloat32,
  float32ToLittleEndianBytes,
  isReadableDtype,
} from './dtype.util';

/** Same limit as the Rust crate (`MAX_HEADER_SIZE`), so we accept exactly what it accepts. */
export const MAX_HEADER_BYTES = 100_000_000;

const METADATA_KEY = '__metadata__';

export interface SafetensorsTensorInfo {
  /** Dtype as stored in the file (e.g. `BF16`); the decoded data is always F32. */
  dtype: string;
  shape: number[];
  /** Byte range relative to the start of the data section. */
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  tensors: Map<string, SafetensorsTensorInfo>;
  metadata?: Record<string, string>;
  /** Absolute offset of the data section in the buffer (8 + header length). */
  dataStart: number;
}

export interface SafetensorsTensor {
  /** Dtype as stored in the file; `data` has been converted to F32. */
  dtype: string;
  shape: number[];
  data: Float32Array;
}

export interface SafetensorsFile {
  tensors: Map<string, SafetensorsTensor>;
  metadata?: Record<string, string>;
}

export interface SafetensorsInput {
  shape: number[];
  data: Float32Array;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isNonNegativeSafeInt(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function elementCount(shape: number[], what: string): number {
  let count = 1;
  for (const dim of shape) {
    count *= dim;
    if (!Number.isSafeInteger(count)) {
      throw new SafetensorsError(
        'INVALID_TENSOR_INFO',
        `${what}: shape ${JSON.stringify(shape)} is too large`,
      );
    }
  }
  return count;
}

function parseTensorInfo(name: string, raw: unknown): SafetensorsTensorInfo {
  if (!isPlainObject(raw)) {
    throw new SafetensorsError('INVALID_TENSOR_INFO', `tensor "${name}": entry is not an object`);
  }
  const { dtype, shape, data_offsets: offsets } = raw;
  if (typeof dtype !== 'string') {
    throw new SafetensorsError('INVALID_TENSOR_INFO', `tensor "${name}": dtype is not a string`);
  }
  if (!(dtype in DTYPE_BYTES)) {
    throw new SafetensorsError('UNSUPPORTED_DTYPE', `tensor "${name}": unknown dtype "${dtype}"`);
  }
  if (!Array.isArray(shape) || !shape.every(isNonNegativeSafeInt)) {
    throw new SafetensorsError(
      'INVALID_TENSOR_INFO',
      `tensor "${name}": shape must be an array of non-negative integers`,
    );
  }
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !isNonNegativeSafeInt(offsets[0]) ||
    !isNonNegativeSafeInt(offsets[1]) ||
    offsets[0] > offsets[1]
  ) {
    throw new SafetensorsError(
      'INVALID_TENSOR_INFO',
      `tensor "${name}": data_offsets must be [begin, end] with 0 <= begin <= end`,
    );
  }
  const dims = shape;
  const byteLength = elementCount(dims, `tensor "${name}"`) * DTYPE_BYTES[dtype];
  if (offsets[1] - offsets[0] !== byteLength) {
    throw new SafetensorsError(
      'INVALID_TENSOR_INFO',
      `tensor "${name}": data_offsets span ${offsets[1] - offsets[0]} bytes but ${dtype}${JSON.stringify(dims)} needs ${byteLength}`,
    );
  }
  return { dtype, shape: [...dims], dataOffsets: [offsets[0], offsets[1]] };
}

/**
 * Parses and validates the header only; no tensor data is decoded. `fileLength` is the size
 * of the whole file when `bytes` holds only its beginning (a header read from disk).
 */
export function readSafetensorsHeader(
  bytes: Uint8Array,
  fileLength: number = bytes.length,
): SafetensorsHeader {
  if (bytes.length < 8) {
    throw new SafetensorsError(
      'HEADER_TOO_SMALL',
      `buffer has ${bytes.length} bytes, fewer than the 8-byte length prefix`,
    );
  }
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (headerLength > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(
      'HEADER_TOO_LARGE',
      `header length ${headerLength} exceeds ${MAX_HEADER_BYTES} bytes`,
    );
  }
  const n = Number(headerLength);
  if (8 + n > bytes.length) {
    throw new SafetensorsError(
      'INVALID_HEADER_LENGTH',
      `header length ${n} runs past the end of a ${bytes.length}-byte buffer (truncated file?)`,
    );
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n));
  } catch {
    throw new SafetensorsError('INVALID_HEADER_UTF8', 'header is not valid UTF-8');
  }
  if (!text.startsWith('{')) {
    throw new SafetensorsError('INVALID_HEADER_START', 'header does not start with "{"');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new SafetensorsError(
      'INVALID_HEADER_JSON',
      `header is not valid JSON (${(error as Error).message})`,
    );
  }
  if (!isPlainObject(parsed)) {
    throw new SafetensorsError('INVALID_HEADER_JSON', 'header JSON is not an object');
  }

  let metadata: Record<string, string> | undefined;
  const tensors = new Map<string, SafetensorsTensorInfo>();
  for (const [name, raw] of Object.entries(parsed)) {
    if (name === METADATA_KEY) {
      if (raw === null) continue;
      if (!isPlainObject(raw) || !Object.values(raw).every((v) => typeof v === 'string')) {
        throw new SafetensorsError(
          'INVALID_METADATA',
          '__metadata__ must be an object of string values',
        );
      }
      metadata = { ...(raw as Record<string, string>) };
      continue;
    }
    tensors.set(name, parseTensorInfo(name, raw));
  }

  // Offsets must tile the data section exactly: sorted by begin, each tensor starts where
  // the previous one ended. This rejects overlaps (aliasing) and holes (hidden payloads).
  const ordered = [...tensors.entries()].sort(
    (a, b) =>
      a[1].dataOffsets[0] - b[1].dataOffsets[0] || a[1].dataOffsets[1] - b[1].dataOffsets[1],
  );
  let cursor = 0;
  for (const [name, info] of ordered) {
    if (info.dataOffsets[0] !== cursor) {
      throw new SafetensorsError(
        'INVALID_OFFSET',
        `tensor "${name}" starts at byte ${info.dataOffsets[0]}, expected ${cursor} (offsets overlap or leave a gap)`,
      );
    }
    cursor = info.dataOffsets[1];
  }
  const dataLength = fileLength - 8 - n;
  if (cursor !== dataLength) {
    throw new SafetensorsError(
      'INCOMPLETE_BUFFER',
      `tensors cover ${cursor} data bytes but the buffer holds ${dataLength} (truncated or padded file)`,
    );
  }
  return { tensors, metadata, dataStart: 8 + n };
}

/**
 * Reads a whole safetensors buffer. F32, F16, BF16 and F64 tensors are converted to F32
 * (each `data` is a fresh copy, never a view of `bytes`); other dtypes raise
 * `UNSUPPORTED_DTYPE` naming the tensor, because a model cannot be loaded without them.
 */
export function readSafetensors(bytes: Uint8Array): SafetensorsFile {
  const header = readSafetensorsHeader(bytes);
  const tensors = new Map<string, SafetensorsTensor>();
  for (const [name, info] of header.tensors) {
    if (!isReadableDtype(info.dtype)) {
      throw new SafetensorsError(
        'UNSUPPORTED_DTYPE',
        `tensor "${name}" has dtype ${info.dtype}; only F32, F16, BF16 and F64 are read`,
      );
    }
    const count = (info.dataOffsets[1] - info.dataOffsets[0]) / DTYPE_BYTES[info.dtype];
    const data = decodeToFloat32(bytes, header.dataStart + info.dataOffsets[0], count, info.dtype);
    tensors.set(name, { dtype: info.dtype, shape: info.shape, data });
  }
  return header.metadata ? { tensors, metadata: header.metadata } : { tensors };
}

/** One tensor of a header being built: its stored dtype and shape, no data. */
export interface SafetensorsHeaderEntry {
  name: string;
  /** A safetensors dtype name (`F32`, `BF16`, ...). */
  dtype: string;
  shape: number[];
}

export interface SafetensorsLayout {
  /** The 8-byte little-endian length prefix followed by the padded JSON header. */
  prefix: Uint8Array;
  /** Entries in file order (name order) with their byte ranges in the data section. */
  entries: Array<SafetensorsHeaderEntry & { dataOffsets: [number, number] }>;
  /** Total bytes of the data section that must follow `prefix`. */
  dataLength: number;
}

/**
 * Builds the header of a safetensors file from names, dtypes and shapes alone, so a writer
 * can stream the tensor bytes afterwards (a 1B-parameter model never sits in memory whole).
 * Layout matches the Rust crate byte for byte: `__metadata__` first and only when given,
 * tensors in name order, compact JSON padded with spaces so the data section starts on an
 * 8-byte boundary. Data must then be written in `entries` order.
 */
export function buildSafetensorsHeader(
  tensors: readonly SafetensorsHeaderEntry[],
  metadata?: Record<string, string>,
): SafetensorsLayout {
  const sorted = [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== 'string') {
        throw new SafetensorsError('INVALID_METADATA', `metadata "${key}" must be a string`);
      }
    }
    header[METADATA_KEY] = metadata;
  }
  const entries: SafetensorsLayout['entries'] = [];
  const seen = new Set<string>();
  let offset = 0;
  for (const { name, dtype, shape } of sorted) {
    if (name === METADATA_KEY || name.length === 0 || seen.has(name)) {
      throw new SafetensorsError('INVALID_TENSOR_INFO', `"${name}" is not a valid tensor name`);
    }
    if (!(dtype in DTYPE_BYTES)) {
      throw new SafetensorsError('UNSUPPORTED_DTYPE', `tensor "${name}": unknown dtype "${dtype}"`);
    }
    if (!shape.every(isNonNegativeSafeInt)) {
      throw new SafetensorsError(
        'INVALID_TENSOR_INFO',
        `tensor "${name}": shape must be non-negative integers`,
      );
    }
    const bytes = elementCount(shape, `tensor "${name}"`) * DTYPE_BYTES[dtype];
    const dataOffsets: [number, number] = [offset, offset + bytes];
    header[name] = { dtype, shape, data_offsets: dataOffsets };
    entries.push({ name, dtype, shape: [...shape], dataOffsets });
    seen.add(name);
    offset += bytes;
  }

  let json = JSON.stringify(header);
  let headerBytes = new TextEncoder().encode(json);
  const padding = (8 - (headerBytes.length % 8)) % 8;
  if (padding > 0) {
    json += ' '.repeat(padding);
    headerBytes = new TextEncoder().encode(json);
  }
  const prefix = new Uint8Array(8 + headerBytes.length);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  prefix.set(headerBytes, 8);
  return { prefix, entries, dataLength: offset };
}

/** Serialises F32 tensors (layout: `buildSafetensorsHeader`). */
export function writeSafetensors(
  tensors: Record<string, SafetensorsInput> | Map<string, SafetensorsInput>,
  metadata?: Record<string, string>,
): Uint8Array {
  const byName = new Map(tensors instanceof Map ? tensors : Object.entries(tensors));
  for (const [name, tensor] of byName) {
    if (!tensor.shape.every(isNonNegativeSafeInt)) {
      throw new SafetensorsError(
        'INVALID_TENSOR_INFO',
        `tensor "${name}": shape must be non-negative integers`,
      );
    }
    const count = elementCount(tensor.shape, `tensor "${name}"`);
    if (count !== tensor.data.length) {
      throw new SafetensorsError(
        'INVALID_TENSOR_DATA',
        `tensor "${name}": shape ${JSON.stringify(tensor.shape)} has ${count} elements but data has ${tensor.data.length}`,
      );
    }
  }
  const layout = buildSafetensorsHeader(
    [...byName].map(([name, t]) => ({ name, dtype: 'F32', shape: t.shape })),
    metadata,
  );
  const out = new Uint8Array(layout.prefix.length + layout.dataLength);
  out.set(layout.prefix, 0);
  for (const entry of layout.entries) {
    out.set(
      float32ToLittleEndianBytes(byName.get(entry.name)!.data),
      layout.prefix.length + entry.dataOffsets[0],
    );
  }
  return out;
}
