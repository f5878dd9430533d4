import {
  type ArgumentsHost,
  Catch,
  type ExceptionFilter,
  HttpException,
  Logger,
} from '@nestjs/common';
import { openAiError, type ErrorCode } from '@lorafleet/contracts';
import type { FastifyReply } from 'fastify';
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

/** Postgres/Redis connection failures: the request is fine, a dependency is down (R4). */
function isDependencyOutage(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  return (
    ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', '57P01', '57P03'].includes(
      String(code),
    ) ||
    /Connection terminated|timeout exceeded when trying to connect|Connection is closed/i.test(
      error.message,
    )
  );
}

/** Renders every error as OpenAI's `{"error": {message, type, param, code}}`. */
@Catch()
export class OpenAiExceptionFilter implements ExceptionFilter {
  private readonly logger = new Logger('Errors');

  catch(exception: unknown, host: ArgumentsHost): void {
    const reply = host.switchToHttp().getResponse<FastifyReply>();
    const [status, body] = this.render(exception);
    void reply.status(status).header('content-type', 'application/json').send(body);
  }

  private render(exception: unknown): [number, ReturnType<typeof openAiError>] {
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
    if (isDependencyOutage(exception)) {
      this.logger.warn(`dependency unavailable: ${(exception as Error).message}`);
      return [
        503,
        openAiError('service_unavailable', 'A backing service is unavailable; retry shortly.'),
      ];
    }
    this.logger.error(
      exception instanceof Error ? (exception.stack ?? exception.message) : String(exception),
    );
    return [500, openAiError('internal_error', 'Internal server error')];
  }
}
