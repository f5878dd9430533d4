import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';

import {
  MAX_HEADER_BYTES,
  SafetensorsError,
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensors,
} from '../src';
import { FIXTURES } from './fixture.helpers';

/** The serialisation test vector of huggingface/safetensors (Rust `test_serialization`). */
const GOLDEN = new Uint8Array([
  64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100, 116, 121, 112,
  101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34, 58, 91, 49, 44, 50, 44, 51,
  93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115, 101, 116, 115, 34, 58, 91, 48, 44, 50, 52,
  93, 125, 125, 0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64,
]);

function header(json: string, data = new Uint8Array(0), declaredLength?: number): Uint8Array {
  const text = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + text.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(declaredLength ?? text.length), true);
  out.set(text, 8);
  out.set(data, 8 + text.length);
  return out;
}

function errorCode(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(SafetensorsError);
    return (error as SafetensorsError).code;
  }
  throw new Error('expected a SafetensorsError');
}

describe('safetensors writer', () => {
  it('reproduces the 96-byte golden vector byte for byte', () => {
    const bytes = writeSafetensors({
      'attn.0': { shape: [1, 2, 3], data: new Float32Array([0, 1, 2, 3, 4, 5]) },
    });
    expect(bytes.length).toBe(96);
    expect(Array.from(bytes)).toEqual(Array.from(GOLDEN));
  });

  it("pads the header with spaces to 8 bytes (the crate's forced-alignment vector)", () => {
    const bytes = writeSafetensors({
      attn0: { shape: [1, 1, 2, 3], data: new Float32Array([0, 1, 2, 3, 4, 5]) },
    });
    const json = '{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}       ';
    expect(bytes.length).toBe(8 + 72 + 24);
    expect(Array.from(bytes.subarray(0, 8))).toEqual([72, 0, 0, 0, 0, 0, 0, 0]);
    expect(new TextDecoder().decode(bytes.subarray(8, 80))).toBe(json);
    expect(Array.from(bytes.subarray(80))).toEqual(Array.from(GOLDEN.subarray(72)));
  });

  it('writes __metadata__ first and only when given, padded to 8 bytes', () => {
    const t = {
      b: { shape: [2], data: new Float32Array([1, 2]) },
      a: { shape: [], data: new Float32Array([3]) },
    };
    const plain = readSafetensorsHeader(writeSafetensors(t));
    expect(plain.metadata).toBeUndefined();
    const withMeta = writeSafetensors(t, { format: 'pt' });
    const n = Number(new DataView(withMeta.buffer).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    const text = new TextDecoder().decode(withMeta.subarray(8, 8 + n));
    expect(text.startsWith('{"__metadata__":{"format":"pt"},"a":')).toBe(true);
    expect(readSafetensors(withMeta).metadata).toEqual({ format: 'pt' });
  });

  it('round-trips values bit-exactly, including NaN payloads and -0', () => {
    const data = new Float32Array([Number.NaN, -0, Infinity, -Infinity, 1e-45, 3.4e38, -1.5]);
    const back = readSafetensors(writeSafetensors({ x: { shape: [7], data } })).tensors.get('x')!;
    expect(new Uint32Array(back.data.buffer)).toEqual(new Uint32Array(data.buffer));
    expect(back.dtype).toBe('F32');
  });

  it('rejects data that does not fit the shape', () => {
    expect(
      errorCode(() => writeSafetensors({ x: { shape: [2, 2], data: new Float32Array(3) } })),
    ).toBe('INVALID_TENSOR_DATA');
  });
});

describe('safetensors reader', () => {
  it('reads the golden vector', () => {
    const file = readSafetensors(GOLDEN);
    expect(file.metadata).toBeUndefined();
    const t = file.tensors.get('attn.0')!;
    expect(t).toEqual({
      dtype: 'F32',
      shape: [1, 2, 3],
      data: new Float32Array([0, 1, 2, 3, 4, 5]),
    });
  });

  it('reads unaligned buffers and never aliases them', () => {
    const shifted = new Uint8Array(GOLDEN.length + 3);
    shifted.set(GOLDEN, 3);
    const view = shifted.subarray(3);
    const t = readSafetensors(view).tensors.get('attn.0')!;
    view[8 + 64] = 0xff;
    expect(Array.from(t.data)).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it('converts F16, BF16 and F64 written by PyTorch to F32 exactly', () => {
    const file = readSafetensors(readFileSync(join(FIXTURES, 'dtypes.safetensors')));
    expect(file.metadata).toEqual({ purpose: 'dtype conversion' });
    for (const [stored, reference] of [
      ['f16', 'f16_as_f32'],
      ['bf16', 'bf16_as_f32'],
      ['f64', 'f64_as_f32'],
    ]) {
      const ours = file.tensors.get(stored)!;
      const ref = file.tensors.get(reference)!;
      expect(ours.dtype).toBe(stored.toUpperCase());
      expect(ours.shape).toEqual(ref.shape);
      expect(Array.from(ours.data)).toEqual(Array.from(ref.data)); // toEqual: -0 vs 0 and ±inf compared exactly
    }
  });

  it('rejects a buffer shorter than the length prefix', () => {
    expect(errorCode(() => readSafetensors(new Uint8Array(5)))).toBe('HEADER_TOO_SMALL');
  });

  it('rejects an oversized header before reading it', () => {
    expect(errorCode(() => readSafetensors(header('{}', undefined, MAX_HEADER_BYTES + 1)))).toBe(
      'HEADER_TOO_LARGE',
    );
    const huge = new Uint8Array(8).fill(0xff);
    expect(errorCode(() => readSafetensors(huge))).toBe('HEADER_TOO_LARGE');
  });

  it('rejects truncated files', () => {
    expect(errorCode(() => readSafetensors(GOLDEN.subarray(0, 60)))).toBe('INVALID_HEADER_LENGTH');
    expect(errorCode(() => readSafetensors(GOLDEN.subarray(0, 95)))).toBe('INCOMPLETE_BUFFER');
  });

  it('rejects trailing bytes after the last tensor', () => {
    const padded = new Uint8Array(100);
    padded.set(GOLDEN);
    expect(errorCode(() => readSafetensors(padded))).toBe('INCOMPLETE_BUFFER');
  });

  it('rejects overlapping offsets and holes', () => {
    const overlap =
      '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}';
    expect(errorCode(() => readSafetensors(header(overlap, new Uint8Array(12))))).toBe(
      'INVALID_OFFSET',
    );
    const hole =
      '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}';
    expect(errorCode(() => readSafetensors(header(hole, new Uint8Array(12))))).toBe(
      'INVALID_OFFSET',
    );
  });

  it('rejects offsets that disagree with dtype × shape', () => {
    const json = '{"a":{"dtype":"F16","shape":[3],"data_offsets":[0,8]}}';
    expect(errorCode(() => readSafetensors(header(json, new Uint8Array(8))))).toBe(
      'INVALID_TENSOR_INFO',
    );
    const giant = '{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}';
    expect(errorCode(() => readSafetensors(header(giant, new Uint8Array(4))))).toBe(
      'INVALID_TENSOR_INFO',
    );
  });

  it('rejects malformed headers with specific codes', () => {
    expect(errorCode(() => readSafetensors(header('[1]')))).toBe('INVALID_HEADER_START');
    expect(errorCode(() => readSafetensors(header('{"a":')))).toBe('INVALID_HEADER_JSON');
    expect(errorCode(() => readSafetensors(header('{"__metadata__":{"k":1}}')))).toBe(
      'INVALID_METADATA',
    );
    expect(
      errorCode(() =>
        readSafetensors(header('{"a":{"dtype":"Q4","shape":[],"data_offsets":[0,0]}}')),
      ),
    ).toBe('UNSUPPORTED_DTYPE');
    const bad = header('{"a":1}');
    expect(errorCode(() => readSafetensors(bad))).toBe('INVALID_TENSOR_INFO');
    const invalidUtf8 = header('{"\xff"}');
    invalidUtf8[10] = 0xff;
    expect(errorCode(() => readSafetensors(invalidUtf8))).toBe('INVALID_HEADER_UTF8');
  });

  it('names integer tensors it cannot convert', () => {
    const json = '{"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}';
    expect(() => readSafetensors(header(json, new Uint8Array(8)))).toThrow(/ids.*I64/);
  });

  it('accepts trailing spaces and zero-sized tensors', () => {
    const json = '{"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]}}   ';
    expect(readSafetensors(header(json)).tensors.get('e')!.data.length).toBe(0);
  });
});

describe('safetensors reader fuzz', () => {
  const onlyTypedErrors = (bytes: Uint8Array) => {
    try {
      readSafetensors(bytes);
    } catch (error) {
      if (!(error instanceof SafetensorsError)) throw error;
    }
  };

  it('throws nothing but SafetensorsError on arbitrary bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 512 }), onlyTypedErrors), { numRuns: 3000 });
  });

  it('throws nothing but SafetensorsError on plausible headers with arbitrary JSON', () => {
    const tensorInfo = fc.record(
      {
        dtype: fc.oneof(
          fc.constantFrom('F32', 'F16', 'BF16', 'F64', 'I64', 'U8', 'BOOL', 'X'),
          fc.anything(),
        ),
        shape: fc.oneof(fc.array(fc.integer({ min: -2, max: 5 }), { maxLength: 4 }), fc.anything()),
        data_offsets: fc.oneof(fc.tuple(fc.nat(64), fc.nat(64)), fc.anything()),
      },
      { requiredKeys: [] },
    );
    const headerJson = fc.dictionary(
      fc.oneof(fc.string(), fc.constant('__metadata__')),
      fc.oneof(tensorInfo, fc.anything()),
      {
        maxKeys: 4,
      },
    );
    fc.assert(
      fc.property(
        headerJson,
        fc.uint8Array({ maxLength: 96 }),
        fc.integer({ min: -8, max: 8 }),
        (json, data, skew) => {
          const text = JSON.stringify(json);
          onlyTypedErrors(
            header(text, data, Math.max(0, new TextEncoder().encode(text).length + skew)),
          );
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('survives every truncation and single-byte corruption of a valid file', () => {
    const valid = writeSafetensors(
      {
        a: { shape: [2, 3], data: new Float32Array(6).fill(1.5) },
        b: { shape: [1], data: new Float32Array([2]) },
      },
      { format: 'pt' },
    );
    for (let cut = 0; cut < valid.length; cut++) onlyTypedErrors(valid.subarray(0, cut));
    fc.assert(
      fc.property(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 }), (index, value) => {
        const copy = valid.slice();
        copy[index] = value;
        onlyTypedErrors(copy);
      }),
      { numRuns: 3000 },
    );
  });
});
