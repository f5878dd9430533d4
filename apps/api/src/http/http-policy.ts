import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { openAiError, type ErrorCode } from '@lorafleet/contracts';
import type { FastifyInstance, FastifyReply, FastifyRequest, FastifyServerOptions } from 'fastify';

/** The OpenAI error body as bytes, for answers written before Fastify has a reply object. */
function errorBody(code: ErrorCode, message: string): string {
  return JSON.stringify(openAiError(code, message));
}

/**
 * Node rejects some requests before Fastify sees them (a header block over the limit: 431; an
 * unparsable request line: 400). Fastify's default answer is its own JSON shape; this one
 * is OpenAI's, like every other error. Written to the socket as Node itself would.
 */
function clientErrorHandler(
  this: FastifyInstance,
  error: Error & { code?: string },
  socket: Socket,
): void {
  // A reset connection has nobody to answer.
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  let status = 400;
  let message = 'The request could not be parsed';
  if (error.code === 'HPE_HEADER_OVERFLOW') {
    status = 431;
    message = 'The request headers are larger than the server accepts';
  } else if (error.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    status = 408;
    message = 'The request took too long to arrive';
  }
  this.log.trace({ err: error }, 'client error');
  if (socket.writable) {
    const body = errorBody('invalid_request', message);
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  }
  socket.destroy(error);
}

/**
 * Errors Fastify's router raises before any route runs (a URL that does not decode:
 * FST_ERR_BAD_URL; a path parameter over `maxParamLength`: FST_ERR_MAX_PARAM_LENGTH), in
 * OpenAI's shape with Fastify's status.
 */
function frameworkErrors(
  error: Error & { code?: string },
  _request: FastifyRequest,
  reply: FastifyReply,
): void {
  let status = 500;
  let code: ErrorCode = 'internal_error';
  let message = 'Internal server error';
  if (error.code === 'FST_ERR_BAD_URL') {
    status = 400;
    code = 'invalid_request';
    message = 'The URL holds an invalid percent-encoded sequence';
  } else if (error.code === 'FST_ERR_MAX_PARAM_LENGTH') {
    status = 414;
    code = 'invalid_request';
    message = 'A path parameter of this URL is too long';
  }
  void reply.code(status).type('application/json').send(openAiError(code, message));
}

/** Fastify options that put its own early errors in OpenAI's shape (see above). */
export function fastifyErrorOptions(): Pick<
  FastifyServerOptions,
  'clientErrorHandler' | 'frameworkErrors'
> {
  return { clientErrorHandler, frameworkErrors };
}

/** `/admin/queues`: HTTP Basic, which browsers cache, so no other site may frame it. */
const BOARD_HEADERS: Readonly<Record<string, string>> = {
  'x-frame-options': 'DENY',
  // Only frame-ancestors: the board's own scripts and fonts are bull-board's to choose.
  'content-security-policy': "frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
};

/** `/docs`: static HTML with an inline style sheet, no scripts, no images, no forms. */
const DOCS_HEADERS: Readonly<Record<string, string>> = {
  'x-frame-options': 'DENY',
  'content-security-policy': [
    "default-src 'none'",
    "style-src 'unsafe-inline'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; '),
  'x-content-type-options': 'nosniff',
};

const pathOf = (url: string): string => {
  const query = url.indexOf('?');
  return query < 0 ? url : url.slice(0, query);
};

const under = (path: string, prefix: string): boolean =>
  path === prefix || path.startsWith(`${prefix}/`);

/** Whether the request carries a body (a length over 0, or a chunked one). */
function hasBody(request: FastifyRequest): boolean {
  const length = request.headers['content-length'];
  if (length !== undefined && length !== '0') return true;
  return request.headers['transfer-encoding'] !== undefined;
}

/** `application/json`, with or without parameters (`; charset=utf-8`). */
function isJson(contentType: string | undefined): boolean {
  return /^application\/json\s*(;|$)/i.test(contentType ?? '');
}

/** The one /v1 route whose body is multipart, not JSON. */
const UPLOAD_PATH = '/v1/files';

/**
 * Security headers by area, and the body rule of `/v1`: a request body that is present must
 * be JSON (415 otherwise), except the multipart upload. Bodiless POSTs (cancel, pause and
 * resume from the openai client, with no content-type) stay valid. Registered on the root
 * instance before Nest's routes, so it covers every route, the dashboard and bull-board.
 */
export function registerHttpPolicy(fastify: FastifyInstance): void {
  fastify.addHook('onRequest', async (request, reply) => {
    const path = pathOf(request.url);
    if (under(path, '/admin/queues')) void reply.headers(BOARD_HEADERS);
    else if (under(path, '/docs')) void reply.headers(DOCS_HEADERS);
    if (!under(path, '/v1')) return;
    // JSON answers must not be sniffed into HTML by a browser.
    void reply.header('x-content-type-options', 'nosniff');
    if (
      ['POST', 'PUT', 'PATCH'].includes(request.method) &&
      path !== UPLOAD_PATH &&
      hasBody(request) &&
      !isJson(request.headers['content-type'])
    ) {
      return reply
        .code(415)
        .type('application/json')
        .send(
          openAiError(
            'invalid_request',
            `Request bodies must be application/json (got ${JSON.stringify(request.headers['content-type'] ?? 'no content-type')})`,
          ),
        );
    }
  });
}
