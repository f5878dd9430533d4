import type { FileObject } from '@lorafleet/contracts';

/** An OpenAI-shaped error answer (`{"error": {message, type, param, code}}`) or any non-2xx. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code: string | null = null,
    readonly param: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The request never got an HTTP answer (server down, DNS, connection reset, offline). */
export class NetworkError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NetworkError';
  }
}

/** Worth retrying later: the network or the server is at fault, not the request. */
export function isRetryable(error: unknown): boolean {
  if (error instanceof NetworkError) return true;
  if (error instanceof ApiError)
    return error.status >= 500 || error.status === 429 || error.status === 408;
  return false;
}

export function isAbort(error: unknown): boolean {
  return (error as { name?: unknown } | null)?.name === 'AbortError';
}

export type Conditional<T> =
  { notModified: true; etag: string | null } | { notModified: false; data: T; etag: string | null };

export interface RequestOptions {
  signal?: AbortSignal;
  headers?: Record<string, string>;
}

export interface ApiClientOptions {
  getKey: () => string | null;
  /** Called on every 401, e.g. to forget the key and show the sign-in page. */
  onUnauthorized?: (error: ApiError) => void;
  fetch?: typeof fetch;
  baseUrl?: string;
}

async function errorFrom(response: Response): Promise<ApiError> {
  let message = `${response.status} ${response.statusText}`.trim();
  let code: string | null = null;
  let param: string | null = null;
  try {
    const text = await response.text();
    try {
      const body = JSON.parse(text) as {
        error?: { message?: unknown; code?: unknown; param?: unknown };
      };
      if (body.error && typeof body.error.message === 'string') {
        message = body.error.message;
        code = typeof body.error.code === 'string' ? body.error.code : null;
        param = typeof body.error.param === 'string' ? body.error.param : null;
      }
    } catch {
      if (text && text.length < 300) message = text;
    }
  } catch {
    /* body unreadable: keep the status line */
  }
  return new ApiError(response.status, message, code, param);
}

/** `attachment; filename="x.tar.gz"` → `x.tar.gz` (RFC 6266, quoted or token, or filename*). */
export function filenameFromDisposition(header: string | null, fallback: string): string {
  if (!header) return fallback;
  const star = /filename\*\s*=\s*(?:UTF-8'')?([^;]+)/i.exec(header);
  if (star) {
    try {
      return decodeURIComponent(star[1].trim().replace(/^"|"$/g, ''));
    } catch {
      /* fall through to the plain form */
    }
  }
  const plain = /filename\s*=\s*("([^"]*)"|[^;\s]+)/i.exec(header);
  const name = plain ? (plain[2] ?? plain[1]) : '';
  // Never let a server-chosen name carry a path.
  const base = name.split(/[\\/]/).pop() ?? '';
  return base || fallback;
}

/**
 * Thin fetch wrapper for the same-origin REST API: adds the Bearer key, turns error bodies into
 * ApiError and transport failures into NetworkError, and supports If-None-Match polling.
 */
export class ApiClient {
  private readonly fetchImpl: typeof fetch;
  private readonly baseUrl: string;

  constructor(private readonly options: ApiClientOptions) {
    // Call through a closure: a bare `window.fetch` reference loses its receiver ("Illegal invocation").
    this.fetchImpl = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.baseUrl = options.baseUrl ?? '';
  }

  async request(
    method: string,
    path: string,
    init: RequestOptions & { body?: BodyInit | null; etag?: string | null } = {},
  ): Promise<Response> {
    const headers: Record<string, string> = { accept: 'application/json', ...init.headers };
    const key = this.options.getKey();
    if (key) headers.authorization = `Bearer ${key}`;
    if (init.etag) headers['if-none-match'] = init.etag;
    let response: Response;
    try {
      response = await this.fetchImpl(`${this.baseUrl}${path}`, {
        method,
        headers,
        body: init.body ?? null,
        signal: init.signal,
        // Conditional requests are ours to make; never let the HTTP cache answer for the API.
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch (error) {
      if (isAbort(error)) throw error;
      throw new NetworkError(
        `Could not reach the lorafleet API (${error instanceof Error ? error.message : String(error)})`,
      );
    }
    if (response.status === 304 || response.ok) return response;
    const apiError = await errorFrom(response);
    if (response.status === 401) this.options.onUnauthorized?.(apiError);
    throw apiError;
  }

  async get<T>(path: string, options: RequestOptions = {}): Promise<T> {
    const response = await this.request('GET', path, options);
    return (await response.json()) as T;
  }

  /** GET with If-None-Match: a 304 answers `notModified` and costs the server no body. */
  async getConditional<T>(
    path: string,
    etag: string | null,
    options: RequestOptions = {},
  ): Promise<Conditional<T>> {
    const response = await this.request('GET', path, { ...options, etag });
    const newEtag = response.headers.get('etag') ?? etag;
    if (response.status === 304) return { notModified: true, etag: newEtag };
    return { notModified: false, data: (await response.json()) as T, etag: newEtag };
  }

  async post<T>(path: string, body?: unknown, options: RequestOptions = {}): Promise<T> {
    const response = await this.request('POST', path, {
      ...options,
      headers:
        body === undefined
          ? options.headers
          : { 'content-type': 'application/json', ...options.headers },
      body: body === undefined ? null : JSON.stringify(body),
    });
    return (await response.json()) as T;
  }

  /** `POST /v1/files` as multipart, the shape the openai client sends. */
  async uploadFile(
    file: Blob,
    filename: string,
    options: RequestOptions = {},
  ): Promise<FileObject> {
    const form = new FormData();
    form.append('purpose', 'fine-tune');
    form.append('file', file, filename);
    const response = await this.request('POST', '/v1/files', { ...options, body: form });
    return (await response.json()) as FileObject;
  }

  /** Fetches a file with the Bearer header (a plain link cannot carry it). */
  async download(
    path: string,
    fallbackName: string,
    options: RequestOptions = {},
  ): Promise<{ blob: Blob; filename: string }> {
    const response = await this.request('GET', path, {
      ...options,
      headers: { accept: '*/*', ...options.headers },
    });
    return {
      blob: await response.blob(),
      filename: filenameFromDisposition(response.headers.get('content-disposition'), fallbackName),
    };
  }
}
