/**
 * Server-sent events parsing for a `fetch` body (the WHATWG "event stream" format). The
 * dashboard cannot use `EventSource`: it only does GET and cannot send the Bearer key, while
 * the completions endpoints are POSTs that need it. So the playground reads the response body
 * itself and feeds the text through this parser.
 */

export interface SseEvent {
  /** The `event:` field; `message` when the server named none. */
  event: string;
  /** Every `data:` line of the event, joined with `\n`. */
  data: string;
}

/**
 * Incremental parser: `push` any slice of the stream (a chunk may end mid-line, or between the
 * `\r` and `\n` of a CRLF) and get the events it completed.
 */
export class SseParser {
  private buffer = '';
  private dataLines: string[] = [];
  private eventName = '';
  /** The last chunk ended with `\r`: a `\n` starting the next one belongs to the same break. */
  private pendingCr = false;

  push(text: string): SseEvent[] {
    let input = text;
    if (this.pendingCr && input.startsWith('\n')) input = input.slice(1);
    this.pendingCr = false;
    this.buffer += input;
    const events: SseEvent[] = [];
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      if (!match) break;
      // A lone `\r` at the very end may be the first half of a CRLF split across chunks.
      if (match[0] === '\r' && match.index === this.buffer.length - 1) this.pendingCr = true;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      const event = this.line(line);
      if (event) events.push(event);
    }
    return events;
  }

  /** The stream ended: an event without its closing blank line is discarded, as the spec says. */
  end(): SseEvent[] {
    this.buffer = '';
    this.dataLines = [];
    this.eventName = '';
    return [];
  }

  private line(line: string): SseEvent | null {
    if (line === '') {
      if (this.dataLines.length === 0) {
        this.eventName = '';
        return null;
      }
      const event = { event: this.eventName || 'message', data: this.dataLines.join('\n') };
      this.dataLines = [];
      this.eventName = '';
      return event;
    }
    if (line.startsWith(':')) return null; // a comment (keep-alive)
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.dataLines.push(value);
    else if (field === 'event') this.eventName = value;
    // `id` and `retry` only matter to EventSource's reconnection, which a POST never does.
    return null;
  }
}

/** The part of a `ReadableStream<Uint8Array>` reader this module uses. */
export interface ByteReader {
  read(): Promise<{ done: boolean; value?: Uint8Array }>;
  cancel(reason?: unknown): Promise<void>;
}

/**
 * Reads a byte stream to its end, calling `onEvent` for each event as soon as its bytes are in.
 * UTF-8 is decoded in streaming mode, so a character split across chunks stays whole.
 * `onEvent` returning `false` stops reading (and cancels the stream).
 */
export async function readSseStream(
  reader: ByteReader,
  onEvent: (event: SseEvent) => boolean | void,
): Promise<void> {
  const decoder = new TextDecoder();
  const parser = new SseParser();
  for (;;) {
    const { done, value } = await reader.read();
    const text = done ? decoder.decode() : decoder.decode(value, { stream: true });
    for (const event of parser.push(text)) {
      if (onEvent(event) === false) {
        await reader.cancel().catch(() => undefined);
        return;
      }
    }
    if (done) {
      parser.end();
      return;
    }
  }
}
