import type { LoggerService } from '@nestjs/common';
import type { ApiEnv } from '@lorafleet/contracts';
import type { AuthenticatedPrincipal } from '@lorafleet/db';
import type {
  FastifyBaseLogger,
  FastifyInstance,
  FastifyServerOptions,
  FastifyRequest,
} from 'fastify';
import { LogController } from 'fastify';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

export const REQUEST_ID_HEADER = 'x-request-id';

/**
 * What an incoming `X-Request-Id` may be: 1–128 characters of letters, digits and
 * `. _ : @ / + = -` (UUIDs, ULIDs, hex trace ids, base64). Anything else is replaced by a
 * generated id rather than refused: the header only correlates logs, and a proxy's odd id
 * must not fail the request. The cap keeps log lines bounded.
 */
const REQUEST_ID_PATTERN = /^[\w.:@/+=-]{1,128}$/;

/** The caller's request id when it is acceptable, else a fresh UUID. */
export function requestIdFrom(header: string | string[] | undefined): string {
  return typeof header === 'string' && REQUEST_ID_PATTERN.test(header) ? header : randomUUID();
}

/** LORAFLEET_LOG_LEVEL (Nest's names) → pino's. */
const PINO_LEVELS = { error: 'error', warn: 'warn', log: 'info', debug: 'debug' } as const;

/** Where log lines go; tests pass a stream that collects them. */
export interface LogDestination {
  write(line: string): void;
}

/**
 * Fastify's built-in pino logger, one JSON object per line: `level` as a name, ISO `time`,
 * `request_id` on every line logged for a request. Fastify's own two lines per request are
 * off; `registerRequestLogging` writes one line when the response is sent.
 */
export function fastifyLoggingOptions(
  env: Pick<ApiEnv, 'LORAFLEET_LOG_LEVEL'>,
  destination?: LogDestination,
): Pick<FastifyServerOptions, 'logger' | 'genReqId' | 'logController'> {
  return {
    logger: {
      level: PINO_LEVELS[env.LORAFLEET_LOG_LEVEL],
      name: 'lorafleet-api',
      formatters: { level: (label: string) => ({ level: label }) },
      timestamp: () => `,"time":"${new Date().toISOString()}"`,
      ...(destination ? { stream: destination } : {}),
    },
    genReqId: (request: IncomingMessage) => requestIdFrom(request.headers[REQUEST_ID_HEADER]),
    logController: new LogController({
      requestIdLogLabel: 'request_id',
      disableRequestLogging: true,
    }),
  };
}

/** pino's numeric levels (`silent` above them all). */
const LEVEL_VALUES: Record<string, number> = {
  trace: 10,
  debug: 20,
  info: 30,
  warn: 40,
  error: 50,
  fatal: 60,
  silent: Infinity,
};

/** Label for requests that matched no route (the URL is logged separately). */
const UNMATCHED_ROUTE = 'unmatched';

/**
 * Echoes the request id as `X-Request-Id` on every answer (errors and 404s included) and logs
 * one line per request: method, route template, URL, status, duration, tenant once the API
 * key resolved, request id. 5xx answers log at `error`, everything else at `info`.
 */
export function registerRequestLogging(fastify: FastifyInstance): void {
  fastify.addHook('onRequest', async (request, reply) => {
    void reply.header(REQUEST_ID_HEADER, request.id);
  });
  fastify.addHook('onResponse', async (request, reply) => {
    const level = reply.statusCode >= 500 ? 'error' : 'info';
    // At `warn`/`error` most answers log nothing: skip building the line.
    if ((LEVEL_VALUES[request.log.level] ?? 0) > LEVEL_VALUES[level]) return;
    const principal = (request as FastifyRequest & { principal?: AuthenticatedPrincipal })
      .principal;
    const line = {
      method: request.method,
      route: request.routeOptions.url ?? UNMATCHED_ROUTE,
      url: request.url,
      status: reply.statusCode,
      duration_ms: Math.round(reply.elapsedTime * 100) / 100,
      tenant_id: principal?.tenantId ?? null,
    };
    request.log[level](line, 'request');
  });
}

type PinoMethod = 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'fatal';

/**
 * Nest's logger on top of Fastify's pino instance, so startup, relay and reconciler messages
 * are JSON lines like the request lines (`context` is the Nest logger's name).
 */
export class PinoNestLogger implements LoggerService {
  constructor(private readonly logger: FastifyBaseLogger) {}

  log(message: unknown, ...optionalParams: unknown[]): void {
    this.write('info', message, optionalParams);
  }

  error(message: unknown, ...optionalParams: unknown[]): void {
    this.write('error', message, optionalParams, true);
  }

  warn(message: unknown, ...optionalParams: unknown[]): void {
    this.write('warn', message, optionalParams);
  }

  debug(message: unknown, ...optionalParams: unknown[]): void {
    this.write('debug', message, optionalParams);
  }

  verbose(message: unknown, ...optionalParams: unknown[]): void {
    this.write('trace', message, optionalParams);
  }

  fatal(message: unknown, ...optionalParams: unknown[]): void {
    this.write('fatal', message, optionalParams, true);
  }

  /** Nest passes `(message, context)`, or for errors `(message, stack, context)`. */
  private write(
    level: PinoMethod,
    message: unknown,
    params: unknown[],
    mayHaveStack = false,
  ): void {
    const strings = params.filter((p): p is string => typeof p === 'string');
    const context = strings.length > 0 ? strings[strings.length - 1] : undefined;
    const stack = mayHaveStack && strings.length > 1 ? strings[0] : undefined;
    const fields: Record<string, unknown> = {};
    if (context !== undefined) fields.context = context;
    if (stack !== undefined) fields.stack = stack;
    if (message instanceof Error) {
      fields.err = message;
      this.logger[level](fields, message.message);
    } else if (typeof message === 'object' && message !== null) {
      this.logger[level]({ ...fields, ...(message as Record<string, unknown>) });
    } else {
      this.logger[level](fields, String(message));
    }
  }
}
