import { ApiClient } from './api-client';
import {
  applyUpdate,
  chunkUpdates,
  columnStats,
  describeColumnError,
  formatLatency,
  formatTokensPerSecond,
  idleColumn,
  startedColumn,
  streamCompletion,
  type ColumnState,
  type StreamUpdate,
} from './completion-stream';
import { defaultPlaygroundForm, toCompletionBody } from './sampling-form';

const chatChunk = (content: string | null, finish: string | null = null, usage?: object) =>
  JSON.stringify({
    id: 'chatcmpl-1',
    object: 'chat.completion.chunk',
    created: 1,
    model: 'm',
    choices: [
      {
        index: 0,
        delta: content === null ? {} : { content },
        logprobs: null,
        finish_reason: finish,
      },
    ],
    usage: usage ?? null,
  });
const USAGE = { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 };
const usageChunk = JSON.stringify({ id: 'x', choices: [], usage: USAGE });

/** Replays updates at the given client times (ms). */
function replay(steps: [number, StreamUpdate][], state = startedColumn(1000)): ColumnState {
  return steps.reduce((s, [at, update]) => applyUpdate(s, update, at), state);
}

describe('chunkUpdates', () => {
  it('reads chat deltas, finish_reason, usage and [DONE]', () => {
    expect(chunkUpdates(chatChunk('Hel'), 'chat')).toEqual([{ kind: 'delta', text: 'Hel' }]);
    expect(chunkUpdates(chatChunk(null, 'length'), 'chat')).toEqual([
      { kind: 'finish', finishReason: 'length' },
    ]);
    expect(chunkUpdates(usageChunk, 'chat')).toEqual([{ kind: 'usage', usage: USAGE }]);
    expect(chunkUpdates('[DONE]', 'chat')).toEqual([{ kind: 'done' }]);
  });

  it('reads text completion chunks, where the last one has empty text and the finish', () => {
    const chunk = (text: string, finish: string | null) =>
      JSON.stringify({ object: 'text_completion', choices: [{ text, finish_reason: finish }] });
    expect(chunkUpdates(chunk(' world', null), 'completion')).toEqual([
      { kind: 'delta', text: ' world' },
    ]);
    expect(chunkUpdates(chunk('', 'stop'), 'completion')).toEqual([
      { kind: 'finish', finishReason: 'stop' },
    ]);
  });

  it('turns an error event or a malformed event into an error', () => {
    const event = JSON.stringify({
      error: {
        message: 'The serving worker stopped answering',
        type: 'server_error',
        param: null,
        code: 'gateway_timeout',
      },
    });
    expect(chunkUpdates(event, 'chat')).toEqual([
      {
        kind: 'error',
        error: {
          status: null,
          code: 'gateway_timeout',
          message: 'The serving worker stopped answering',
        },
      },
    ]);
    expect(chunkUpdates('{not json', 'chat')).toEqual([
      {
        kind: 'error',
        error: {
          status: null,
          code: null,
          message: 'The API sent an event that is not JSON: {not json',
        },
      },
    ]);
  });
});

describe('column state and figures', () => {
  it('counts time to first token from the send, and tokens/s over the whole answer', () => {
    const streaming = replay([
      [1100, { kind: 'delta', text: 'a' }],
      [1150, { kind: 'delta', text: 'b' }],
    ]);
    expect(streaming).toMatchObject({ status: 'streaming', text: 'ab', chunks: 2 });
    // Live: the text events so far (a lower bound), over 150 ms since the send.
    expect(columnStats(streaming)).toEqual({
      ttftMs: 100,
      tokens: 2,
      exact: false,
      tokensPerSecond: 2 / 0.15,
    });
    const done = replay(
      [
        [1250, { kind: 'finish', finishReason: 'stop' }],
        [1250, { kind: 'usage', usage: USAGE }],
        [1251, { kind: 'done' }],
      ],
      streaming,
    );
    expect(done).toMatchObject({ status: 'done', finishReason: 'stop', usage: USAGE });
    // Final: usage's exact count (the end-of-sequence token included), over 250 ms.
    expect(columnStats(done)).toEqual({ ttftMs: 100, tokens: 3, exact: true, tokensPerSecond: 12 });
  });

  it('has no figures before the first token, and times an empty answer by its finish', () => {
    expect(columnStats(startedColumn(5))).toEqual({
      ttftMs: null,
      tokens: 0,
      exact: false,
      tokensPerSecond: null,
    });
    expect(columnStats(idleColumn()).ttftMs).toBeNull();
    const empty = replay([
      [1040, { kind: 'finish', finishReason: 'stop' }],
      [1040, { kind: 'usage', usage: { ...USAGE, completion_tokens: 1 } }],
      [1041, { kind: 'done' }],
    ]);
    expect(empty.text).toBe('');
    expect(columnStats(empty)).toMatchObject({ ttftMs: 40, tokens: 1, tokensPerSecond: 25 });
  });

  it('keeps a finished column as it is: stop after done, or events after stop', () => {
    const done = replay([
      [1010, { kind: 'delta', text: 'x' }],
      [1011, { kind: 'done' }],
    ]);
    expect(applyUpdate(done, { kind: 'stopped' }, 2000)).toBe(done);
    const stopped = replay([
      [1010, { kind: 'delta', text: 'x' }],
      [1020, { kind: 'stopped' }],
    ]);
    expect(stopped.status).toBe('stopped');
    expect(applyUpdate(stopped, { kind: 'delta', text: 'late' }, 1030)).toBe(stopped);
  });

  it('formats the figures', () => {
    expect(formatLatency(null)).toBe('—');
    expect(formatLatency(12.4)).toBe('12 ms');
    expect(formatLatency(1234)).toBe('1.23 s');
    expect(formatTokensPerSecond(null)).toBe('—');
    expect(formatTokensPerSecond(7.25)).toBe('7.3');
    expect(formatTokensPerSecond(1234.5)).toBe('1235');
    expect(describeColumnError({ status: 404, code: 'model_not_found', message: 'nope' })).toBe(
      '404 model_not_found: nope',
    );
    expect(describeColumnError({ status: null, code: null, message: 'dropped' })).toBe('dropped');
  });
});

describe('streamCompletion', () => {
  const sse = (events: string[], close = true) =>
    new Response(
      new ReadableStream<Uint8Array>({
        start(controller) {
          const bytes = new TextEncoder().encode(events.map((e) => `data: ${e}\n\n`).join(''));
          // Deliver in small pieces, as a network would.
          for (let i = 0; i < bytes.length; i += 7) controller.enqueue(bytes.slice(i, i + 7));
          if (close) controller.close();
        },
      }),
      { status: 200, headers: { 'content-type': 'text/event-stream; charset=utf-8' } },
    );
  const errorBody = (status: number, code: string, message: string) =>
    new Response(
      JSON.stringify({ error: { message, type: 'invalid_request_error', param: 'model', code } }),
      { status, headers: { 'content-type': 'application/json' } },
    );

  async function run(
    respond: (init: RequestInit) => Response | Promise<Response>,
    signal = new AbortController().signal,
  ) {
    const requests: { url: string; init: RequestInit }[] = [];
    // The client always calls fetch with a path string.
    const fakeFetch = (input: string, init?: RequestInit) => {
      requests.push({ url: input, init: init ?? {} });
      return Promise.resolve(respond(init ?? {}));
    };
    const api = new ApiClient({ getKey: () => 'sk-test', fetch: fakeFetch as typeof fetch });
    const updates: StreamUpdate[] = [];
    const body = toCompletionBody('chat', 'ft:m:o:s:ftjob-1', {
      ...defaultPlaygroundForm(),
      prompt: 'hi',
    });
    await streamCompletion({ api, mode: 'chat', body, signal, onUpdate: (u) => updates.push(u) });
    return { updates, requests };
  }

  it('posts the streamed request with the key and reports each event in order', async () => {
    const { updates, requests } = await run(() =>
      sse([chatChunk('Hé'), chatChunk('llo'), chatChunk(null, 'stop'), usageChunk, '[DONE]']),
    );
    expect(requests).toHaveLength(1);
    expect(requests[0].url).toBe('/v1/chat/completions');
    const headers = new Headers(requests[0].init.headers);
    expect(headers.get('authorization')).toBe('Bearer sk-test');
    expect(headers.get('accept')).toBe('text/event-stream');
    expect(JSON.parse(requests[0].init.body as string)).toMatchObject({
      model: 'ft:m:o:s:ftjob-1',
      stream: true,
      stream_options: { include_usage: true },
      temperature: 0,
    });
    expect(updates).toEqual([
      { kind: 'delta', text: 'Hé' },
      { kind: 'delta', text: 'llo' },
      { kind: 'finish', finishReason: 'stop' },
      { kind: 'usage', usage: USAGE },
      { kind: 'done' },
    ]);
  });

  it.each([
    [404, 'model_not_found', 'The model ft:m:o:s:ftjob-1 does not exist'],
    [503, 'service_unavailable', 'The serving worker has other model files'],
    [504, 'gateway_timeout', 'No serving worker answered within 30000 ms'],
  ])('reports a refused request (%i) with its OpenAI error', async (status, code, message) => {
    const { updates } = await run(() => errorBody(status, code, message));
    expect(updates).toEqual([{ kind: 'error', error: { status, code, message } }]);
  });

  it('reports an error event mid-stream and nothing after it', async () => {
    const failure = JSON.stringify({
      error: { message: 'worker died', type: 'server_error', param: null, code: 'gateway_timeout' },
    });
    const { updates } = await run(() => sse([chatChunk('a'), failure, chatChunk('never')]));
    expect(updates).toEqual([
      { kind: 'delta', text: 'a' },
      { kind: 'error', error: { status: null, code: 'gateway_timeout', message: 'worker died' } },
    ]);
  });

  it('reports a stream that ends without [DONE] as an error', async () => {
    const { updates } = await run(() => sse([chatChunk('a')]));
    expect(updates).toEqual([
      { kind: 'delta', text: 'a' },
      {
        kind: 'error',
        error: {
          status: null,
          code: null,
          message: 'The stream ended before the answer was complete.',
        },
      },
    ]);
  });

  it('reports an unreachable API', async () => {
    const { updates } = await run(() => Promise.reject(new TypeError('Failed to fetch')));
    expect(updates).toHaveLength(1);
    expect(updates[0]).toMatchObject({ kind: 'error', error: { status: null } });
    expect((updates[0] as { error: { message: string } }).error.message).toMatch(
      /Could not reach the lorafleet API \(Failed to fetch\)/,
    );
  });

  it('reports Stop as stopped, mid-stream, once', async () => {
    const abort = new AbortController();
    const { updates } = await run((init) => {
      // One event arrives; the stream then stays open until the abort errors it, as fetch does.
      const stream = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode(`data: ${chatChunk('a')}\n\n`));
          init.signal?.addEventListener('abort', () =>
            controller.error(new DOMException('The user aborted a request.', 'AbortError')),
          );
          setTimeout(() => abort.abort(), 20);
        },
      });
      return new Response(stream, { headers: { 'content-type': 'text/event-stream' } });
    }, abort.signal);
    expect(updates).toEqual([{ kind: 'delta', text: 'a' }, { kind: 'stopped' }]);
  });
});
