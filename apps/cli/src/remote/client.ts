/**
 * A small HTTP client for the lorafleet REST API (`/v1`, OpenAI-compatible). It uses Node's
 * global `fetch` only, so the remote commands start fast and never load TypeORM or tfjs.
 *
 * Failures come in two kinds, which the commands map to different exit codes:
 * - `ApiRequestError`: the server answered with an OpenAI error body (`message`, `param`, …);
 * - `ApiConnectionError`: no usable answer at all (refused, DNS, timeout, not lorafleet).
 */

/** Where the API is and who we are. */
export interface RemoteClientOptions {
  baseUrl: string;
  apiKey?: string;
  /** Per-request timeout; default 30 s (uploads and downloads get 10 minutes). */
  timeoutMs?: number;
  /** Injected in tests; defaults to the global fetch. */
  fetch?: typeof fetch;
}

/** The server answered with an error status and (usually) an OpenAI error body. */
export class ApiRequestError extends Error {
  override readonly name = 'ApiRequestError';
  constructor(
    readonly status: number,
    message: string,
    readonly type: string | null,
    readonly param: string | null,
    readonly code: string | null,
  ) {
    super(message);
  }

  /** One line for humans: the OpenAI message, its `param`, the status and code. */
  describe(): string {
    const param = this.param ? ` (param: ${this.param})` : '';
    const code = this.code ? ` ${this.code}` : '';
    return `${this.message}${param} [HTTP ${this.status}${code}]`;
  }
}

/** No usable answer: connection refused, DNS failure, timeout, or a body that is not lorafleet's. */
export class ApiConnectionError extends Error {
  override readonly name = 'ApiConnectionError';
}

export interface ConditionalResult<T> {
  /** `undefined` when the server answered 304 Not Modified. */
  body: T | undefined;
  etag: string | null;
  notModified: boolean;
}

type Query = Record<string, string | number | boolean | undefined | null>;

const DEFAULT_TIMEOUT_MS = 30_000;
const TRANSFER_TIMEOUT_MS = 10 * 60_000;

export class RemoteClient {
  readonly baseUrl: string;
  private readonly apiKey: string | undefined;
  private readonly timeoutMs: number;
  private readonly fetchImpl: typeof fetch;

  constructor(options: RemoteClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.apiKey = options.apiKey;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.fetchImpl = options.fetch ?? fetch;
  }

  url(path: string, query: Query = {}): string {
    const url = new URL(`${this.baseUrl}${path}`);
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
    }
    return url.toString();
  }

  /** A JSON request; resolves with the parsed body of a 2xx answer. */
  async json<T>(
    method: string,
    path: string,
    options: { body?: unknown; query?: Query; headers?: Record<string, string> } = {},
  ): Promise<T> {
    const response = await this.send(method, path, {
      query: options.query,
      headers: {
        accept: 'application/json',
        ...(options.body === undefined ? {} : { 'content-type': 'application/json' }),
        ...options.headers,
      },
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    });
    return (await this.parseJson(response)) as T;
  }

  /**
   * A POST answered with server-sent events (`stream: true` completions): yields each
   * `data:` payload parsed as JSON until `data: [DONE]`. An `error` event (the API's way to
   * fail after the first byte) throws an `ApiRequestError`, as an error status does.
   */
  async *events(path: string, body: unknown): AsyncGenerator<unknown> {
    const response = await this.send('POST', path, {
      headers: { accept: 'text/event-stream', 'content-type': 'application/json' },
      body: JSON.stringify(body),
      // A long answer streams for longer than one request's timeout; the API bounds the
      // silence between tokens itself.
      timeoutMs: TRANSFER_TIMEOUT_MS,
    });
    if (!response.body) throw new ApiConnectionError(`POST ${path} answered without a body`);
    const decoder = new TextDecoder();
    let buffer = '';
    for await (const bytes of response.body as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(bytes, { stream: true });
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event
          .split('\n')
          .filter((line) => line.startsWith('data:'))
          .map((line) => line.slice(5).trimStart())
          .join('\n');
        if (data === '') continue;
        if (data === '[DONE]') return;
        const parsed = JSON.parse(data) as unknown;
        const error = openAiErrorFrom(response.status, parsed);
        if (error) throw error;
        yield parsed;
      }
    }
    throw new ApiConnectionError(`the stream of POST ${path} ended before [DONE]`);
  }

  /** GET with `If-None-Match`: a 304 resolves with `notModified` and no body. */
  async conditional<T>(
    path: string,
    etag: string | null,
    query: Query = {},
  ): Promise<ConditionalResult<T>> {
    const response = await this.send('GET', path, {
      query,
      headers: { accept: 'application/json', ...(etag ? { 'if-none-match': etag } : {}) },
    });
    if (response.status === 304) return { body: undefined, etag, notModified: true };
    const body = (await this.parseJson(response)) as T;
    return { body, etag: response.headers.get('etag'), notModified: false };
  }

  /** Multipart upload of one file (`file` part plus plain fields), as the openai client does. */
  async upload<T>(
    path: string,
    file: { name: string; content: Uint8Array },
    fields: Record<string, string>,
  ): Promise<T> {
    const form = new FormData();
    for (const [key, value] of Object.entries(fields)) form.append(key, value);
    form.append('file', new Blob([file.content]), file.name);
    const response = await this.send('POST', path, { body: form, timeoutMs: TRANSFER_TIMEOUT_MS });
    return (await this.parseJson(response)) as T;
  }

  /** A binary download (adapter archive, PEFT files, file content). */
  async bytes(path: string): Promise<Buffer> {
    const response = await this.send('GET', path, { timeoutMs: TRANSFER_TIMEOUT_MS });
    try {
      return Buffer.from(await response.arrayBuffer());
    } catch (error) {
      throw new ApiConnectionError(
        `reading the response of GET ${path} failed: ${(error as Error).message}`,
      );
    }
  }

  private async send(
    method: string,
    path: string,
    options: {
      query?: Query;
      headers?: Record<string, string>;
      body?: string | FormData;
      timeoutMs?: number;
    },
  ): Promise<Response> {
    const url = this.url(path, options.query);
    let response: Response;
    try {
      response = await this.fetchImpl(url, {
        method,
        headers: {
          ...(this.apiKey ? { authorization: `Bearer ${this.apiKey}` } : {}),
          ...options.headers,
        },
        body: options.body,
        signal: AbortSignal.timeout(options.timeoutMs ?? this.timeoutMs),
      });
    } catch (error) {
      throw new ApiConnectionError(
        `cannot reach the lorafleet API at ${this.baseUrl}: ${describeFetchError(error)}`,
      );
    }
    if (response.ok || response.status === 304) return response;
    throw await this.errorFrom(method, path, response);
  }

  private async errorFrom(method: string, path: string, response: Response): Promise<Error> {
    const text = await response.text().catch(() => '');
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    const error = openAiErrorFrom(response.status, parsed);
    if (error) return error;
    // Not an OpenAI error body: a proxy, or something else listening on that port.
    const snippet = text.replace(/\s+/g, ' ').trim().slice(0, 200);
    return new ApiRequestError(
      response.status,
      `${method} ${path} answered HTTP ${response.status}${snippet ? `: ${snippet}` : ''}`,
      null,
      null,
      null,
    );
  }

  private async parseJson(response: Response): Promise<unknown> {
    const text = await response.text();
    try {
      return JSON.parse(text) as unknown;
    } catch {
      throw new ApiConnectionError(
        `the server at ${this.baseUrl} did not answer with JSON (is it a lorafleet API?): ${text.slice(0, 120)}`,
      );
    }
  }
}

/** An OpenAI error body (`{"error": {"message", …}}`) as an `ApiRequestError`, else null. */
function openAiErrorFrom(status: number, body: unknown): ApiRequestError | null {
  const error = (body as { error?: Record<string, unknown> } | undefined)?.error;
  if (!error || typeof error !== 'object' || typeof error.message !== 'string') return null;
  const str = (v: unknown) => (typeof v === 'string' ? v : null);
  return new ApiRequestError(
    status,
    error.message,
    str(error.type),
    str(error.param),
    str(error.code),
  );
}

function describeFetchError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  if (error.name === 'TimeoutError' || error.name === 'AbortError') return 'the request timed out';
  // undici wraps the system error (ECONNREFUSED, ENOTFOUND, …) in `cause`.
  const cause = (error as { cause?: unknown }).cause;
  if (cause instanceof Error) {
    const code = (cause as { code?: unknown }).code;
    return typeof code === 'string' ? `${code} (${cause.message})` : cause.message;
  }
  return error.message;
}
