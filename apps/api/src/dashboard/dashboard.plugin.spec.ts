/**
 * The dashboard is served on the API's origin without shadowing any API or ops path: client
 * routes answer index.html (with a CSP), /assets/* are immutable and pre-compressed, and
 * everything else keeps its own handler or the JSON 404.
 */
import 'reflect-metadata';
import { Controller, Get, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import {
  DASHBOARD_CLIENT_ROUTES,
  DEFAULT_DASHBOARD_DIST,
  RESERVED_PREFIXES,
  registerDashboard,
} from './dashboard.plugin';

@Controller()
class FakeApiController {
  @Get('v1/ping')
  ping() {
    return { pong: true };
  }

  @Get('healthz')
  health() {
    return { status: 'ok' };
  }

  @Get('metrics')
  metrics() {
    return 'metrics';
  }

  @Get('docs')
  docs() {
    return 'docs';
  }
}

@Module({ controllers: [FakeApiController] })
class FakeApiModule {}

const INDEX =
  '<!doctype html><title>lorafleet</title><script type="module" src="/assets/app-abc123.js"></script>';
const SCRIPT = `console.log(${JSON.stringify('x'.repeat(4000))});`;

async function start(distDir: string): Promise<NestFastifyApplication> {
  const app = await NestFactory.create<NestFastifyApplication>(
    FakeApiModule,
    new FastifyAdapter(),
    {
      logger: false,
    },
  );
  await registerDashboard(app, { distDir });
  await app.init();
  await app.getHttpAdapter().getInstance().ready();
  return app;
}

describe('dashboard static serving', () => {
  let dist: string;
  let app: NestFastifyApplication;

  beforeAll(async () => {
    dist = mkdtempSync(path.join(tmpdir(), 'lorafleet-dashboard-'));
    mkdirSync(path.join(dist, 'assets'));
    writeFileSync(path.join(dist, 'index.html'), INDEX);
    writeFileSync(path.join(dist, 'assets/app-abc123.js'), SCRIPT);
    writeFileSync(path.join(dist, 'assets/app-abc123.js.br'), brotliCompressSync(SCRIPT));
    writeFileSync(path.join(dist, 'assets/app-abc123.js.gz'), gzipSync(SCRIPT));
    writeFileSync(path.join(dist, 'assets/.secret'), 'no');
    app = await start(dist);
  });

  afterAll(async () => {
    await app?.close();
    rmSync(dist, { recursive: true, force: true });
  });

  const get = (url: string, headers: Record<string, string> = {}) =>
    app.inject({ method: 'GET', url, headers });

  it('finds apps/dashboard/dist from both src/ and dist/ of the API', () => {
    expect(DEFAULT_DASHBOARD_DIST).toBe(path.resolve(__dirname, '../../../dashboard/dist'));
    expect(DEFAULT_DASHBOARD_DIST.endsWith(path.join('apps', 'dashboard', 'dist'))).toBe(true);
  });

  it.each([
    '/',
    '/sign-in',
    '/jobs',
    '/jobs?status=running&after=ftjob-1',
    '/jobs/new',
    '/jobs/ftjob-abc',
    '/fleet',
    '/playground',
    '/playground?base=tiny-random-gpt2&adapter=ft%3Atiny-random-gpt2%3Aorg%3Ax%3Aftjob-1',
  ])('serves index.html for the client route %s', async (url) => {
    const response = await get(url);
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(response.body).toBe(INDEX);
    expect(response.headers['cache-control']).toBe('no-cache');
    expect(response.headers['content-security-policy']).toContain("default-src 'self'");
    expect(response.headers['content-security-policy']).toContain("frame-ancestors 'none'");
    expect(response.headers['x-content-type-options']).toBe('nosniff');
  });

  it('answers HEAD for client routes', async () => {
    const response = await app.inject({ method: 'HEAD', url: '/jobs' });
    expect(response.statusCode).toBe(200);
  });

  it('serves hashed assets as immutable, pre-compressed when the client accepts it', async () => {
    const plain = await get('/assets/app-abc123.js');
    expect(plain.statusCode).toBe(200);
    expect(plain.headers['content-type']).toMatch(/javascript/);
    expect(plain.headers['cache-control']).toMatch(/max-age=31536000/);
    expect(plain.headers['cache-control']).toMatch(/immutable/);
    expect(plain.body).toBe(SCRIPT);

    const br = await get('/assets/app-abc123.js', { 'accept-encoding': 'br, gzip' });
    expect(br.statusCode).toBe(200);
    expect(br.headers['content-encoding']).toBe('br');
    expect(Number(br.headers['content-length'])).toBeLessThan(SCRIPT.length);
  });

  it('does not serve dotfiles, directory listings or paths outside assets/', async () => {
    expect((await get('/assets/.secret')).statusCode).toBe(403);
    const listing = await get('/assets/');
    expect([403, 404]).toContain(listing.statusCode);
    expect(listing.body).not.toContain('app-abc123');
    expect((await get('/assets/missing.js')).statusCode).toBe(404);
    const traversal = await get('/assets/../index.html');
    expect(traversal.body).not.toBe(INDEX);
    expect((await get('/index.html')).statusCode).toBe(404);
  });

  it('never shadows the API or ops paths', async () => {
    expect((await get('/v1/ping')).json()).toEqual({ pong: true });
    expect((await get('/healthz')).json()).toEqual({ status: 'ok' });
    expect((await get('/metrics')).body).toBe('metrics');
    expect((await get('/docs')).body).toBe('docs');
    for (const prefix of RESERVED_PREFIXES) {
      const response = await get(`${prefix}/no-such-route`);
      expect(response.statusCode).toBe(404);
      expect(response.headers['content-type']).toMatch(/application\/json/);
      expect(response.body).not.toContain('<!doctype html>');
    }
    const clientRoutes: readonly string[] = DASHBOARD_CLIENT_ROUTES;
    for (const route of clientRoutes) {
      expect(RESERVED_PREFIXES.some((p) => route === p || route.startsWith(`${p}/`))).toBe(false);
    }
  });

  it('leaves unknown paths to the API 404', async () => {
    const response = await get('/nope');
    expect(response.statusCode).toBe(404);
    expect(response.headers['content-type']).toMatch(/application\/json/);
  });

  it('answers 503 with build instructions while the dashboard is not built', async () => {
    const empty = mkdtempSync(path.join(tmpdir(), 'lorafleet-dashboard-missing-'));
    const bare = await start(path.join(empty, 'dist'));
    try {
      const response = await bare.inject({ method: 'GET', url: '/jobs' });
      expect(response.statusCode).toBe(503);
      expect(response.body).toContain('nx build dashboard');
      expect((await bare.inject({ method: 'GET', url: '/v1/ping' })).json()).toEqual({
        pong: true,
      });
    } finally {
      await bare.close();
      rmSync(empty, { recursive: true, force: true });
    }
  });
});
