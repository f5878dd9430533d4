import fastifyStatic from '@fastify/static';
import { Logger } from '@nestjs/common';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';

/**
 * Serves the dashboard (apps/dashboard, a Vite build) on the API's own origin, so it calls
 * /v1 without CORS. Routes are explicit, never a catch-all: `/assets/*` (hashed, immutable
 * files) and the client routes below, which all answer index.html. Everything else (/v1,
 * /healthz, /readyz, /metrics, /docs, /admin, unknown paths) keeps its own handler or the API's
 * JSON 404.
 */

/** `apps/api/{src,dist}/dashboard/` → `apps/dashboard/dist` (same depth from source and build). */
export const DEFAULT_DASHBOARD_DIST = path.resolve(__dirname, '../../../dashboard/dist');

/** Client-side routes (apps/dashboard/src/lib/routes.ts); keep the two lists in step. */
export const DASHBOARD_CLIENT_ROUTES = [
  '/',
  '/sign-in',
  '/jobs',
  '/jobs/*',
  '/fleet',
  '/playground',
] as const;

/** Prefixes the dashboard must never answer (asserted by the API and browser tests). */
export const RESERVED_PREFIXES = [
  '/v1',
  '/healthz',
  '/readyz',
  '/metrics',
  '/docs',
  '/admin',
] as const;

/** Headers of the HTML shell. The CSP allows only this origin: no inline script, no third parties. */
export const DASHBOARD_HTML_HEADERS: Readonly<Record<string, string>> = {
  'content-type': 'text/html; charset=utf-8',
  // index.html names the current hashed assets: always revalidate it.
  'cache-control': 'no-cache',
  'content-security-policy': [
    "default-src 'self'",
    "script-src 'self'",
    // Preact and uPlot set element styles at run time.
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join('; '),
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

const NOT_BUILT_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lorafleet</title></head>
<body><h1>The lorafleet dashboard is not built</h1>
<p>Run <code>npx nx build dashboard</code> (or <code>npm run build</code>) and reload. The REST API is at <code>/v1</code>.</p>
</body></html>
`;

export interface DashboardOptions {
  /** The Vite output directory (index.html + assets/). */
  distDir?: string;
}

/** index.html, re-read when its mtime changes (a rebuild names new hashed assets). */
class IndexHtml {
  private cached: { mtimeMs: number; html: string } | null = null;

  constructor(private readonly file: string) {}

  async load(): Promise<string | null> {
    try {
      const info = await stat(this.file);
      if (this.cached?.mtimeMs !== info.mtimeMs) {
        this.cached = { mtimeMs: info.mtimeMs, html: await readFile(this.file, 'utf8') };
      }
      return this.cached.html;
    } catch {
      this.cached = null;
      return null;
    }
  }
}

export async function registerDashboard(
  app: NestFastifyApplication,
  options: DashboardOptions = {},
): Promise<void> {
  const distDir = path.resolve(options.distDir ?? DEFAULT_DASHBOARD_DIST);
  const index = new IndexHtml(path.join(distDir, 'index.html'));
  if ((await index.load()) === null) {
    new Logger('Dashboard').warn(
      `${distDir}/index.html is missing: / answers 503 until the dashboard is built (npx nx build dashboard)`,
    );
  }

  const sendShell = async (reply: FastifyReply): Promise<void> => {
    const html = await index.load();
    await reply
      .headers(DASHBOARD_HTML_HEADERS)
      .status(html === null ? 503 : 200)
      .send(html ?? NOT_BUILT_HTML);
  };

  // An encapsulated context: nothing here (no reply decorators, no hooks) leaks into the API.
  await app.register(async (scope: FastifyInstance) => {
    await scope.register(fastifyStatic, {
      root: path.join(distDir, 'assets'),
      prefix: '/assets/',
      wildcard: true,
      index: false,
      list: false,
      dotfiles: 'deny',
      decorateReply: false,
      // Vite names assets by content hash, and the build writes .br/.gz beside them.
      immutable: true,
      maxAge: '365d',
      preCompressed: true,
      suppressWarning: true,
      setHeaders: (reply) => void reply.header('x-content-type-options', 'nosniff'),
    });
    for (const url of DASHBOARD_CLIENT_ROUTES) {
      scope.get(url, (_request, reply) => sendShell(reply));
    }
  });
}
