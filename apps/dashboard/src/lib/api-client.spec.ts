import {
  ApiClient,
  ApiError,
  NetworkError,
  filenameFromDisposition,
  isRetryable,
} from './api-client';

interface Call {
  url: string;
  init: RequestInit;
}

function fakeFetch(responses: (() => Response | Promise<Response>)[]) {
  const calls: Call[] = [];
  const impl = (async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    calls.push({ url, init: init ?? {} });
    const next = responses.shift();
    if (!next) throw new Error('unexpected request');
    return next();
  }) as typeof fetch;
  return { calls, impl };
}

const headersOf = (call: Call) => new Headers(call.init.headers);
const json = (body: unknown, status = 200, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json', ...headers },
  });

describe('ApiClient', () => {
  it('sends the key as a Bearer token, same origin, bypassing the HTTP cache', async () => {
    const { calls, impl } = fakeFetch([() => json({ object: 'list', data: [] })]);
    const client = new ApiClient({ getKey: () => 'sk-test', fetch: impl });
    await client.get('/v1/models');
    expect(calls[0].url).toBe('/v1/models');
    expect(headersOf(calls[0]).get('authorization')).toBe('Bearer sk-test');
    expect(calls[0].init.cache).toBe('no-store');
    expect(calls[0].init.credentials).toBe('omit');
  });

  it('polls with If-None-Match and treats 304 as unchanged', async () => {
    const { calls, impl } = fakeFetch([
      () => json({ id: 'ftjob-1', status: 'running' }, 200, { etag: 'W/"a"' }),
      () => new Response(null, { status: 304, headers: { etag: 'W/"a"' } }),
    ]);
    const client = new ApiClient({ getKey: () => 'k', fetch: impl });
    const first = await client.getConditional<{ id: string }>('/v1/fine_tuning/jobs/ftjob-1', null);
    expect(first).toEqual({
      notModified: false,
      data: { id: 'ftjob-1', status: 'running' },
      etag: 'W/"a"',
    });
    expect(headersOf(calls[0]).has('if-none-match')).toBe(false);
    const second = await client.getConditional('/v1/fine_tuning/jobs/ftjob-1', first.etag);
    expect(second).toEqual({ notModified: true, etag: 'W/"a"' });
    expect(headersOf(calls[1]).get('if-none-match')).toBe('W/"a"');
  });

  it('turns OpenAI-shaped errors into ApiError with status, code and param', async () => {
    const { impl } = fakeFetch([
      () =>
        json(
          {
            error: {
              message: 'lora.r: Too big',
              type: 'invalid_request_error',
              param: 'lora.r',
              code: 'invalid_request',
            },
          },
          400,
        ),
    ]);
    const client = new ApiClient({ getKey: () => 'k', fetch: impl });
    const error = await client.post('/v1/fine_tuning/jobs', {}).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error).toMatchObject({
      status: 400,
      message: 'lora.r: Too big',
      code: 'invalid_request',
      param: 'lora.r',
    });
    expect(isRetryable(error)).toBe(false);
  });

  it('reports 401 to onUnauthorized', async () => {
    const { impl } = fakeFetch([
      () =>
        json(
          {
            error: {
              message: 'Incorrect API key',
              type: 'authentication_error',
              param: null,
              code: 'invalid_api_key',
            },
          },
          401,
        ),
    ]);
    const seen: ApiError[] = [];
    const client = new ApiClient({
      getKey: () => 'k',
      fetch: impl,
      onUnauthorized: (e) => seen.push(e),
    });
    await expect(client.get('/v1/models')).rejects.toMatchObject({ status: 401 });
    expect(seen).toHaveLength(1);
  });

  it('wraps transport failures in NetworkError (retryable) and keeps aborts as aborts', async () => {
    const abort = Object.assign(new Error('aborted'), { name: 'AbortError' });
    const { impl } = fakeFetch([
      () => Promise.reject(new TypeError('Failed to fetch')),
      () => Promise.reject(abort),
      () => new Response('upstream down', { status: 503 }),
    ]);
    const client = new ApiClient({ getKey: () => 'k', fetch: impl });
    const network = await client.get('/v1/models').catch((e: unknown) => e);
    expect(network).toBeInstanceOf(NetworkError);
    expect(isRetryable(network)).toBe(true);
    await expect(client.get('/v1/models')).rejects.toBe(abort);
    const unavailable = await client.get('/v1/models').catch((e: unknown) => e);
    expect(unavailable).toMatchObject({ status: 503, message: 'upstream down' });
    expect(isRetryable(unavailable)).toBe(true);
  });

  it('uploads multipart with purpose=fine-tune', async () => {
    const { calls, impl } = fakeFetch([() => json({ id: 'file-1', status: 'processed' })]);
    const client = new ApiClient({ getKey: () => 'k', fetch: impl });
    await client.uploadFile(new Blob(['{"text":"a"}\n']), 'train.jsonl');
    const form = calls[0].init.body as FormData;
    expect(form.get('purpose')).toBe('fine-tune');
    expect((form.get('file') as File).name).toBe('train.jsonl');
    expect(headersOf(calls[0]).has('content-type')).toBe(false); // fetch sets the boundary
  });

  it('downloads a blob named by Content-Disposition', async () => {
    const { calls, impl } = fakeFetch([
      () =>
        new Response(new Uint8Array([1, 2, 3]), {
          headers: { 'content-disposition': 'attachment; filename="adapter-1.tar.gz"' },
        }),
    ]);
    const client = new ApiClient({ getKey: () => 'k', fetch: impl });
    const { blob, filename } = await client.download(
      '/v1/adapters/adapter-1/archive',
      'fallback.tar.gz',
    );
    expect(filename).toBe('adapter-1.tar.gz');
    expect(blob.size).toBe(3);
    expect(headersOf(calls[0]).get('authorization')).toBe('Bearer k');
  });
});

describe('filenameFromDisposition', () => {
  it.each([
    ['attachment; filename="adapter_config.json"', 'adapter_config.json'],
    ['attachment; filename=plain.bin', 'plain.bin'],
    ["attachment; filename*=UTF-8''na%C3%AFve.txt", 'naïve.txt'],
    ['attachment; filename="../../etc/passwd"', 'passwd'],
    [null, 'fallback'],
    ['inline', 'fallback'],
  ])('%s → %s', (header, name) => expect(filenameFromDisposition(header, 'fallback')).toBe(name));
});
