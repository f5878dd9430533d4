import { jobUrl, jobsUrl, matchRoute, safeNext } from './routes';

describe('routes', () => {
  it.each([
    ['/', '', { page: 'jobs', status: null, after: null, limit: null }],
    [
      '/jobs',
      '?status=running&after=ftjob-9&limit=10',
      { page: 'jobs', status: 'running', after: 'ftjob-9', limit: 10 },
    ],
    ['/jobs/', '?limit=1000', { page: 'jobs', status: null, after: null, limit: null }],
    ['/jobs/new', '', { page: 'new-job' }],
    ['/jobs/ftjob-abc123', '', { page: 'job', id: 'ftjob-abc123' }],
    ['/fleet', '', { page: 'fleet' }],
    ['/playground', '', { page: 'playground', base: null, adapters: [], mode: 'chat' }],
    [
      '/playground',
      '?base=b&adapter=ft%3Ab%3Ao%3As%3Aftjob-1&mode=completion',
      { page: 'playground', base: 'b', adapters: ['ft:b:o:s:ftjob-1'], mode: 'completion' },
    ],
    ['/sign-in', '?next=%2Fjobs%2Fftjob-1', { page: 'sign-in', next: '/jobs/ftjob-1' }],
    ['/elsewhere', '', { page: 'not-found', path: '/elsewhere' }],
  ])('%s%s', (path, search, route) => expect(matchRoute(path, search)).toEqual(route));

  it('only follows same-origin dashboard paths after sign-in', () => {
    expect(safeNext('/jobs/ftjob-1')).toBe('/jobs/ftjob-1');
    expect(safeNext('https://evil.example')).toBeNull();
    expect(safeNext('//evil.example')).toBeNull();
    expect(safeNext('/\\evil.example')).toBeNull();
    expect(safeNext('/sign-in')).toBeNull();
    expect(safeNext(null)).toBeNull();
  });

  it('builds URLs', () => {
    expect(jobsUrl({})).toBe('/jobs');
    expect(jobsUrl({ status: 'failed', limit: 10, after: 'ftjob-2' })).toBe(
      '/jobs?status=failed&limit=10&after=ftjob-2',
    );
    expect(jobUrl('ftjob-1')).toBe('/jobs/ftjob-1');
  });
});
