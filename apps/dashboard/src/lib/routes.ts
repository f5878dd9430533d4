import { parsePlaygroundSearch, type PlaygroundSelection } from './playground-url';

/**
 * Client routes. The API serves index.html for exactly these paths
 * (apps/api/src/dashboard/dashboard-static.ts, CLIENT_ROUTES); keep the two lists in step.
 */
export type Route =
  | { page: 'sign-in'; next: string | null }
  | { page: 'jobs'; status: string | null; after: string | null; limit: number | null }
  | { page: 'new-job' }
  | { page: 'job'; id: string }
  | { page: 'fleet' }
  | ({ page: 'playground' } & PlaygroundSelection)
  | { page: 'not-found'; path: string };

export function matchRoute(pathname: string, search: string): Route {
  const params = new URLSearchParams(search);
  const path = pathname.replace(/\/+$/, '') || '/';
  if (path === '/sign-in') return { page: 'sign-in', next: safeNext(params.get('next')) };
  if (path === '/' || path === '/jobs') {
    const limit = Number(params.get('limit'));
    return {
      page: 'jobs',
      status: params.get('status') || null,
      after: params.get('after') || null,
      limit: Number.isInteger(limit) && limit >= 1 && limit <= 100 ? limit : null,
    };
  }
  if (path === '/jobs/new') return { page: 'new-job' };
  const job = /^\/jobs\/([A-Za-z0-9_.:-]+)$/.exec(path);
  if (job) return { page: 'job', id: decodeURIComponent(job[1]) };
  if (path === '/fleet') return { page: 'fleet' };
  if (path === '/playground') return { page: 'playground', ...parsePlaygroundSearch(search) };
  return { page: 'not-found', path };
}

/** Only same-origin dashboard paths may be a post-sign-in destination (no open redirect). */
export function safeNext(next: string | null): string | null {
  if (!next || !next.startsWith('/') || next.startsWith('//') || next.startsWith('/\\'))
    return null;
  if (next.startsWith('/sign-in')) return null;
  return next;
}

export function jobsUrl(query: {
  status?: string | null;
  after?: string | null;
  limit?: number | null;
}): string {
  const params = new URLSearchParams();
  if (query.status) params.set('status', query.status);
  if (query.limit) params.set('limit', String(query.limit));
  if (query.after) params.set('after', query.after);
  const text = params.toString();
  return text ? `/jobs?${text}` : '/jobs';
}

export const jobUrl = (id: string): string => `/jobs/${encodeURIComponent(id)}`;
