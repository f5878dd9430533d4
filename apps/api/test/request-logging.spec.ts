/**
 * Structured logs: one JSON line per request with its request id, which the caller may
 * supply (`X-Request-Id`, validated and capped) and always gets back; error logs carry it
 * too. The API's logger stream is captured, nothing is mocked.
 */
import { FastifyAdapter } from '@nestjs/platform-fastify';

import {
  REQUEST_ID_HEADER,
  fastifyLoggingOptions,
  registerRequestLogging,
  requestIdFrom,
  type LogDestination,
} from '../src/http/request-logging';
import { startApi, until, type ApiHarness } from './api-harness';

jest.setTimeout(60_000);

type LogLine = Record<string, unknown>;

/** A log destination that keeps every line, parsed; a line that is not JSON fails the test. */
class CapturedLog implements LogDestination {
  readonly raw: string[] = [];

  write(chunk: string): void {
    for (const line of chunk.split('\n')) if (line.trim() !== '') this.raw.push(line);
  }

  get lines(): LogLine[] {
    return this.raw.map((line) => JSON.parse(line) as LogLine);
  }

  /** The request lines (`msg: "request"`) logged for one request id. */
  requestLines(id: string): LogLine[] {
    return this.lines.filter((l) => l.msg === 'request' && l.request_id === id);
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe('request ids and JSON request logs (api)', () => {
  const log = new CapturedLog();
  let api: ApiHarness;
  let key: string;
  let tenantId: string;

  beforeAll(async () => {
    api = await startApi(
      { LORAFLEET_LOG_LEVEL: 'log' },
      { proxyPostgres: true, logDestination: log },
    );
    tenantId = (await api.tenants.createTenant('logs')).id;
    key = (await api.apiKeys.issue(tenantId)).plaintext;
  });

  afterAll(async () => {
    await api.proxy?.start().catch(() => undefined);
    await api.close();
  });

  const get = (path: string, headers: Record<string, string> = {}) =>
    fetch(`${api.baseUrl}${path}`, { headers: { authorization: `Bearer ${key}`, ...headers } });

  /** Waits for the request line of `id` (written once the response has been sent). */
  const requestLine = (id: string) =>
    until(`request log line for ${id}`, () =>
      Promise.resolve(log.requestLines(id).length > 0 ? log.requestLines(id) : undefined),
    );

  it('echoes a valid X-Request-Id and logs exactly one JSON line with it', async () => {
    const id = 'trace-0123456789abcdef:span/7+a=';
    const response = await get('/v1/models', { 'X-Request-Id': id });
    expect(response.status).toBe(200);
    expect(response.headers.get(REQUEST_ID_HEADER)).toBe(id);
    const lines = await requestLine(id);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: 'info',
      name: 'lorafleet-api',
      request_id: id,
      method: 'GET',
      route: '/v1/models',
      url: '/v1/models',
      status: 200,
      tenant_id: tenantId,
    });
    expect(typeof lines[0].duration_ms).toBe('number');
    expect(lines[0].duration_ms as number).toBeGreaterThanOrEqual(0);
    expect(new Date(lines[0].time as string).toISOString()).toBe(lines[0].time);
  });

  it('logs the route template, not the URL, and the tenant once the key resolved', async () => {
    const id = 'job-lookup-1';
    const response = await get('/v1/fine_tuning/jobs/ftjob-nope', { 'x-request-id': id });
    expect(response.status).toBe(404);
    expect(response.headers.get(REQUEST_ID_HEADER)).toBe(id);
    expect((await requestLine(id))[0]).toMatchObject({
      route: '/v1/fine_tuning/jobs/:id',
      url: '/v1/fine_tuning/jobs/ftjob-nope',
      status: 404,
      tenant_id: tenantId,
    });
  });

  it('generates an id when none is sent, and replaces an invalid or over-long one', async () => {
    for (const sent of [undefined, 'x'.repeat(129), 'has space', 'quote"', '']) {
      const response = await get('/v1/models', sent === undefined ? {} : { 'X-Request-Id': sent });
      expect(response.status).toBe(200);
      const id = response.headers.get(REQUEST_ID_HEADER) ?? '';
      expect(id).toMatch(UUID);
      expect(id).not.toBe(sent);
      expect((await requestLine(id))[0]).toMatchObject({ request_id: id, status: 200 });
    }
    // 128 characters is the cap, inclusive.
    const longest = 'a'.repeat(128);
    const response = await get('/v1/models', { 'X-Request-Id': longest });
    expect(response.headers.get(REQUEST_ID_HEADER)).toBe(longest);
  });

  it('sends the id on answers that never reach a route: 401 and unmatched 404', async () => {
    const unauthenticated = await fetch(`${api.baseUrl}/v1/models`, {
      headers: { 'X-Request-Id': 'no-key' },
    });
    expect(unauthenticated.status).toBe(401);
    expect(unauthenticated.headers.get(REQUEST_ID_HEADER)).toBe('no-key');
    expect((await requestLine('no-key'))[0]).toMatchObject({ status: 401, tenant_id: null });

    const nowhere = await get('/v1/nowhere', { 'X-Request-Id': 'nowhere' });
    expect(nowhere.status).toBe(404);
    expect(nowhere.headers.get(REQUEST_ID_HEADER)).toBe('nowhere');
    expect((await requestLine('nowhere'))[0]).toMatchObject({ route: 'unmatched', status: 404 });
  });

  it('puts the request id on the error log when Postgres is down (503)', async () => {
    await api.proxy!.stop();
    try {
      const response = await get('/v1/models', { 'X-Request-Id': 'pg-down' });
      expect(response.status).toBe(503);
      expect(response.headers.get(REQUEST_ID_HEADER)).toBe('pg-down');
      const [line] = await requestLine('pg-down');
      expect(line).toMatchObject({ level: 'error', status: 503 });
      const warning = log.lines.find(
        (l) => l.request_id === 'pg-down' && l.msg !== 'request' && l.level === 'warn',
      );
      expect(warning).toMatchObject({ context: 'Errors' });
      expect(String(warning?.msg)).toMatch(/dependency unavailable/);
    } finally {
      await api.proxy!.start();
    }
  });

  it('writes only JSON lines, Nest startup messages included', () => {
    expect(log.raw.length).toBeGreaterThan(0);
    expect(() => log.lines).not.toThrow();
    expect(log.lines.some((l) => l.context === 'NestApplication')).toBe(true);
  });
});

describe('LORAFLEET_LOG_LEVEL', () => {
  /** A bare Fastify with the API's logging, to see what each level lets through. */
  async function linesAt(level: 'error' | 'warn' | 'log' | 'debug', status: number) {
    const log = new CapturedLog();
    const fastify = new FastifyAdapter(
      fastifyLoggingOptions({ LORAFLEET_LOG_LEVEL: level }, log),
    ).getInstance();
    registerRequestLogging(fastify);
    fastify.get('/probe', (_request, reply) => reply.status(status).send({ ok: status < 400 }));
    const response = await fastify.inject({ method: 'GET', url: '/probe' });
    await fastify.close();
    expect(response.headers[REQUEST_ID_HEADER]).toMatch(UUID);
    return log.lines.filter((l) => l.msg === 'request');
  }

  it('logs request lines at "log" and "debug", not at "warn" or "error"', async () => {
    expect(await linesAt('log', 200)).toHaveLength(1);
    expect(await linesAt('debug', 200)).toHaveLength(1);
    expect(await linesAt('warn', 200)).toHaveLength(0);
    expect(await linesAt('error', 404)).toHaveLength(0);
  });

  it('still logs a 5xx request line at "error"', async () => {
    expect(await linesAt('error', 500)).toEqual([
      expect.objectContaining({ level: 'error', status: 500 }),
    ]);
  });
});

describe('requestIdFrom', () => {
  it('keeps 1–128 safe characters and replaces anything else', () => {
    expect(requestIdFrom('abc-DEF_1.2:3@4/5+6=')).toBe('abc-DEF_1.2:3@4/5+6=');
    expect(requestIdFrom(['a', 'b'])).toMatch(UUID);
    expect(requestIdFrom(undefined)).toMatch(UUID);
    expect(requestIdFrom('a\nb')).toMatch(UUID);
    expect(requestIdFrom('\u00e9')).toMatch(UUID);
  });
});
