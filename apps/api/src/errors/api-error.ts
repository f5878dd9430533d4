import { ERROR_CODES, type ErrorCode } from '@lorafleet/contracts';

/** An expected failure with an OpenAI-shaped body; the global filter renders it. */
export class ApiError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly param: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  get status(): number {
    return ERROR_CODES[this.code].status;
  }
}
