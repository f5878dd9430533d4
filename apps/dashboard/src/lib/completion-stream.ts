import { ApiError, isAbort, type ApiClient } from './api-client';
import type { PlaygroundMode } from './playground-url';
import { COMPLETION_PATHS, type CompletionRequestBody } from './sampling-form';
import { readSseStream } from './sse';

/**
 * One playground column: a streamed `POST /v1/chat/completions` or `/v1/completions` read as
 * server-sent events (docs/api.md "Completions"), the column's state as its events arrive, and
 * its figures (time to first token, tokens/s). Framework-free, so it is unit tested with a fake
 * fetch and a fake clock.
 */

export type ColumnStatus = 'idle' | 'waiting' | 'streaming' | 'done' | 'stopped' | 'error';

export interface ColumnError {
  /** The HTTP status of a refused request; null for an error event mid-stream or no answer. */
  status: number | null;
  /** OpenAI's error `code` (`model_not_found`, `gateway_timeout`, …) when the API sent one. */
  code: string | null;
  message: string;
}

export interface CompletionUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface ColumnState {
  status: ColumnStatus;
  text: string;
  /** Client clock (ms) when the request was sent. */
  startedAt: number | null;
  /** When the first generated token arrived: the first text, or the finish of an empty answer. */
  firstTokenAt: number | null;
  /** When the latest text, finish or usage event arrived. */
  lastEventAt: number | null;
  /** Text events so far: one per decode round, so at most the number of tokens. */
  chunks: number;
  finishReason: string | null;
  usage: CompletionUsage | null;
  error: ColumnError | null;
}

export type StreamUpdate =
  | { kind: 'delta'; text: string }
  | { kind: 'finish'; finishReason: string }
  | { kind: 'usage'; usage: CompletionUsage }
  /** `data: [DONE]`: the answer is complete. */
  | { kind: 'done' }
  | { kind: 'error'; error: ColumnError }
  /** The user pressed Stop (the request was aborted; the API cancels it on the worker). */
  | { kind: 'stopped' };

export const idleColumn = (): ColumnState => ({
  status: 'idle',
  text: '',
  startedAt: null,
  firstTokenAt: null,
  lastEventAt: null,
  chunks: 0,
  finishReason: null,
  usage: null,
  error: null,
});

export const startedColumn = (now: number): ColumnState => ({
  ...idleColumn(),
  status: 'waiting',
  startedAt: now,
});

const isFinished = (status: ColumnStatus) =>
  status === 'done' || status === 'stopped' || status === 'error';

export function applyUpdate(state: ColumnState, update: StreamUpdate, now: number): ColumnState {
  // Nothing changes a finished column: a late event after Stop, say.
  if (isFinished(state.status)) return state;
  switch (update.kind) {
    case 'delta':
      return {
        ...state,
        status: 'streaming',
        text: state.text + update.text,
        chunks: state.chunks + 1,
        firstTokenAt: state.firstTokenAt ?? now,
        lastEventAt: now,
      };
    case 'finish':
      return {
        ...state,
        finishReason: update.finishReason,
        firstTokenAt: state.firstTokenAt ?? now,
        lastEventAt: now,
      };
    case 'usage':
      return { ...state, usage: update.usage, lastEventAt: now };
    case 'done':
      return { ...state, status: 'done' };
    case 'error':
      return { ...state, status: 'error', error: update.error };
    case 'stopped':
      return { ...state, status: 'stopped' };
  }
}

export interface ColumnStats {
  /** Time to first token (ms), from sending the request. */
  ttftMs: number | null;
  /** Completion tokens: usage's exact count once it arrived, else the text events so far. */
  tokens: number;
  /** Whether `tokens` is usage's exact count. */
  exact: boolean;
  /**
   * Tokens over the time from sending the request to the latest event, as `npm run bench:serve`
   * measures through the API (docs/benchmarks.md), so the two figures compare. Null until a
   * token arrived.
   */
  tokensPerSecond: number | null;
}

export function columnStats(state: ColumnState): ColumnStats {
  const exact = state.usage !== null;
  const tokens = state.usage?.completion_tokens ?? state.chunks;
  const ttftMs =
    state.startedAt !== null && state.firstTokenAt !== null
      ? state.firstTokenAt - state.startedAt
      : null;
  const elapsedMs =
    state.startedAt !== null && state.lastEventAt !== null
      ? state.lastEventAt - state.startedAt
      : 0;
  const tokensPerSecond = tokens > 0 && elapsedMs > 0 ? tokens / (elapsedMs / 1000) : null;
  return { ttftMs, tokens, exact, tokensPerSecond };
}

interface ChunkShape {
  error?: { message?: unknown; code?: unknown };
  choices?: {
    text?: unknown;
    delta?: { content?: unknown };
    finish_reason?: unknown;
  }[];
  usage?: {
    prompt_tokens?: unknown;
    completion_tokens?: unknown;
    total_tokens?: unknown;
  } | null;
}

const streamError = (message: string, code: string | null = null): StreamUpdate => ({
  kind: 'error',
  error: { status: null, code, message },
});

/**
 * One event's `data` → what it says: `[DONE]`, an OpenAI error object, or a chunk with text
 * (chat: `choices[0].delta.content`; completion: `choices[0].text`), a `finish_reason`, or
 * `usage` (the last chunk, with empty `choices`).
 */
export function chunkUpdates(data: string, mode: PlaygroundMode): StreamUpdate[] {
  if (data.trim() === '[DONE]') return [{ kind: 'done' }];
  let chunk: ChunkShape;
  try {
    chunk = JSON.parse(data) as ChunkShape;
  } catch {
    return [streamError(`The API sent an event that is not JSON: ${data.slice(0, 80)}`)];
  }
  if (chunk.error) {
    const message =
      typeof chunk.error.message === 'string' ? chunk.error.message : 'The stream failed.';
    const code = typeof chunk.error.code === 'string' ? chunk.error.code : null;
    return [streamError(message, code)];
  }
  const updates: StreamUpdate[] = [];
  const choice = chunk.choices?.[0];
  if (choice) {
    const text = mode === 'chat' ? choice.delta?.content : choice.text;
    if (typeof text === 'string' && text !== '') updates.push({ kind: 'delta', text });
    if (typeof choice.finish_reason === 'string')
      updates.push({ kind: 'finish', finishReason: choice.finish_reason });
  }
  const usage = chunk.usage;
  if (usage && typeof usage.completion_tokens === 'number') {
    updates.push({
      kind: 'usage',
      usage: {
        prompt_tokens: Number(usage.prompt_tokens ?? 0),
        completion_tokens: usage.completion_tokens,
        total_tokens: Number(usage.total_tokens ?? 0),
      },
    });
  }
  return updates;
}

export interface StreamCompletionOptions {
  api: ApiClient;
  mode: PlaygroundMode;
  body: CompletionRequestBody;
  signal: AbortSignal;
  /** Every update, in order; the last one is `done`, `error` or `stopped`. */
  onUpdate: (update: StreamUpdate) => void;
}

/**
 * Sends one streamed completion and reports its events until the answer is complete, the API
 * refuses it (an OpenAI error body: 400, 404 model, 503/504 serving), the stream fails (an error
 * event, or a connection that ends early), or `signal` aborts it. It never throws.
 */
export async function streamCompletion(options: StreamCompletionOptions): Promise<void> {
  const { api, mode, body, signal, onUpdate } = options;
  let finished = false;
  const report = (update: StreamUpdate) => {
    if (finished) return;
    if (update.kind === 'done' || update.kind === 'error' || update.kind === 'stopped')
      finished = true;
    onUpdate(update);
  };
  try {
    const response = await api.request('POST', COMPLETION_PATHS[mode], {
      headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify(body),
      signal,
    });
    const type = response.headers.get('content-type') ?? '';
    if (!response.body || !type.includes('text/event-stream')) {
      report(streamError(`Expected an event stream, got ${type || 'no body'}.`));
      return;
    }
    await readSseStream(response.body.getReader(), (event) => {
      for (const update of chunkUpdates(event.data, mode)) report(update);
      return !finished;
    });
    // The body ended without `[DONE]` or an error event: the connection dropped.
    report(streamError('The stream ended before the answer was complete.'));
  } catch (error) {
    if (isAbort(error) || signal.aborted) report({ kind: 'stopped' });
    else if (error instanceof ApiError)
      report({
        kind: 'error',
        error: { status: error.status, code: error.code, message: error.message },
      });
    else report(streamError(error instanceof Error ? error.message : String(error)));
  }
}

/** 12.3 → "12 ms", 1234 → "1.23 s"; null → "—". */
export function formatLatency(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms)) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

/** One decimal below 100, whole numbers from 100 up: 7.25 → "7.3", 1234.5 → "1235"; null → "—". */
export function formatTokensPerSecond(rate: number | null): string {
  if (rate === null || !Number.isFinite(rate)) return '—';
  return rate >= 100 ? String(Math.round(rate)) : rate.toFixed(1);
}

export const COLUMN_STATUS_LABELS: Readonly<Record<ColumnStatus, string>> = {
  idle: 'Not sent',
  waiting: 'Waiting for the first token…',
  streaming: 'Streaming…',
  done: 'Done',
  stopped: 'Stopped',
  error: 'Failed',
};

/** A column's error for people: the status and code when there are any, then the API's words. */
export function describeColumnError(error: ColumnError): string {
  const head = [error.status !== null ? String(error.status) : null, error.code]
    .filter(Boolean)
    .join(' ');
  return head ? `${head}: ${error.message}` : error.message;
}
