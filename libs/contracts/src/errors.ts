import { z } from 'zod';

/** OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`. */
export const OpenAiErrorSchema = z.object({
  error: z.object({
    message: z.string(),
    type: z.string(),
    param: z.string().nullable(),
    code: z.string().nullable(),
  }),
});
export type OpenAiError = z.infer<typeof OpenAiErrorSchema>;

/** Machine-readable error codes, each with its HTTP status and OpenAI error type. */
export const ERROR_CODES = {
  invalid_request: { status: 400, type: 'invalid_request_error' },
  invalid_file: { status: 400, type: 'invalid_request_error' },
  model_not_found: { status: 404, type: 'invalid_request_error' },
  not_found: { status: 404, type: 'invalid_request_error' },
  invalid_api_key: { status: 401, type: 'authentication_error' },
  permission_denied: { status: 403, type: 'permission_error' },
  invalid_state: { status: 409, type: 'invalid_request_error' },
  payload_too_large: { status: 413, type: 'invalid_request_error' },
  idempotency_mismatch: { status: 422, type: 'invalid_request_error' },
  rate_limit_exceeded: { status: 429, type: 'rate_limit_error' },
  service_unavailable: { status: 503, type: 'server_error' },
  /** A serving worker stopped answering mid-request (issue 19): retrying may reach another. */
  gateway_timeout: { status: 504, type: 'server_error' },
  internal_error: { status: 500, type: 'server_error' },
} as const satisfies Record<string, { status: number; type: string }>;
export type ErrorCode = keyof typeof ERROR_CODES;

export function openAiError(
  code: ErrorCode,
  message: string,
  param: string | null = null,
): OpenAiError {
  return { error: { message, type: ERROR_CODES[code].type, param, code } };
}
