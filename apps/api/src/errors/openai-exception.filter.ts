import { type ArgumentsHost, Catch, type ExceptionFilter, HttpException } from '@nestjs/common';
import { openAiError, type ErrorCode } from '@lorafleet/contracts';
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify';
import { ZodError } from 'zod';
import { ApiError } from './api-error';

const STATUS_TO_CODE: Record<number, ErrorCode> = {
  400: 'invalid_request',
  401: 'invalid_api_key',
  403: 'permission_denied',
  404: 'not_found',
  409: 'invalid_state',
  413: 'payload_too_large',
  415: 'invalid_request',
  422: 'idempotency_mismatch',
  429: 'rate_limit_exceeded',
  503: 'service_unavailable',
};

/** Node socket errors and Postgres connection/availability SQLSTATEs (classes 08, 53300, 57P0x). */
const OUTAGE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  '08000',
  '08001',
  '08003',
  '08004',
  '08006',
  '53300',
  '57P01',
  '57P02',
  '57P03',
]);

/**
 * Postgres/Redis connection failures: the request is fine, a dependency is down (R4).
 * Duck-typed rather than `instanceof Error`: socket errors are created by Node's own `net`
 * module, which under Jest lives in another realm, so `instanceof` misses them there.
 */
function isDependencyOutage(error: unknown): error is { message: string } {
  if (typeof error !== 'object' || error === null) return false;
  const { code, message } = error as { code?: unknown; message?: unknown };
  return (
    OUTAGE_CODES.has(String(code)) ||
    (typeof message === 'string' &&
      /Connection terminated|timeout exceeded when trying to connect|Connection is closed|Stream isn't writeable/i.test(
        message,
      ))
  );
}

/**
 * Postgres cannot store NUL in text (22021) or `\u0000` in jsonb (22P05). Such a value came
 * from the client (an id, a cursor, metadata), so it is a bad request, not a server fault.
 */
function isUnstorableText(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false;
  const { code, driverError } = error as { code?: unknown; driverError?: { code?: unknown } };
  return ['22021', '22P05'].includes(String(driverError?.code ?? code));
}

/**
 * Renders every error as OpenAI's `{"error": {message, type, param, code}}`. Server-side
 * faults are logged through the request's logger, so the line carries its `request_id`.
 */
@Catch()
export class OpenAiExceptionFilter implements ExceptionFilter {
  catch(exception: unknown, host: ArgumentsHost): void {
    const http = host.switchToHttp();
    const reply = http.getResponse<FastifyReply>();
    const [status, body] = this.render(exception, http.getRequest<FastifyRequest>().log);
    void reply.status(status).header('content-type', 'application/json');
    // OpenAI's clients retry 409 (meant for lock timeouts) unless told otherwise; a job-state
    // conflict never heals on retry. A 503 (dependency down) is worth retrying, after a pause.
    if (status === 409) void reply.header('x-should-retry', 'false');
    if (status === 503) void reply.header('retry-after', '1');
    void reply.send(body);
  }

  private render(
    exception: unknown,
    log: FastifyBaseLogger,
  ): [number, ReturnType<typeof openAiError>] {
    if (exception instanceof ApiError) {
      return [exception.status, openAiError(exception.code, exception.message, exception.param)];
    }
    if (exception instanceof ZodError) {
      const issue = exception.issues[0];
      const param = issue?.path.length ? issue.path.join('.') : null;
      return [
        400,
        openAiError('invalid_request', `${param ?? 'body'}: ${issue?.message ?? 'invalid'}`, param),
      ];
    }
    if (exception instanceof HttpException) {
      const status = exception.getStatus();
      const code = STATUS_TO_CODE[status] ?? (status >= 500 ? 'internal_error' : 'invalid_request');
      return [status, openAiError(code, exception.message)];
    }
    // Fastify's own errors (body too large, bad JSON, bad content type) carry statusCode.
    const statusCode = (exception as { statusCode?: unknown } | null)?.statusCode;
    if (typeof statusCode === 'number' && statusCode >= 400 && statusCode < 500) {
      const message = exception instanceof Error ? exception.message : 'bad request';
      return [statusCode, openAiError(STATUS_TO_CODE[statusCode] ?? 'invalid_request', message)];
    }
    if (isUnstorableText(exception)) {
      return [
        400,
        openAiError('invalid_request', 'Text values must not contain NUL (\\u0000) characters'),
      ];
    }
    if (isDependencyOutage(exception)) {
      log.warn({ context: 'Errors' }, `dependency unavailable: ${exception.message}`);
      return [
        503,
        openAiError('service_unavailable', 'A backing service is unavailable; retry shortly.'),
      ];
    }
    log.error(
      { context: 'Errors', err: exception },
      exception instanceof Error ? exception.message : String(exception),
    );
    return [500, openAiError('internal_error', 'Internal server error')];
  }
}
