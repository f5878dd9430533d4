/**
 * Why a safetensors buffer was rejected. The codes follow the failure classes of the
 * reference Rust crate (huggingface/safetensors `SafeTensorError`), so a message from
 * lorafleet can be matched against what the Python library would say about the same file.
 */
export type SafetensorsErrorCode =
  | 'HEADER_TOO_SMALL'
  | 'HEADER_TOO_LARGE'
  | 'INVALID_HEADER_LENGTH'
  | 'INVALID_HEADER_UTF8'
  | 'INVALID_HEADER_START'
  | 'INVALID_HEADER_JSON'
  | 'INVALID_METADATA'
  | 'INVALID_TENSOR_INFO'
  | 'INVALID_OFFSET'
  | 'INCOMPLETE_BUFFER'
  | 'UNSUPPORTED_DTYPE'
  | 'INVALID_TENSOR_DATA';

/** The only error type that `readSafetensors`/`writeSafetensors` throw on bad input. */
export class SafetensorsError extends Error {
  override readonly name = 'SafetensorsError';

  constructor(
    readonly code: SafetensorsErrorCode,
    message: string,
  ) {
    super(`safetensors ${code}: ${message}`);
  }
}
