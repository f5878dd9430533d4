import { SseParser, readSseStream, type ByteReader, type SseEvent } from './sse';

/** A reader that hands out the given byte chunks, then ends; records a cancel. */
function chunkedReader(chunks: Uint8Array[]): ByteReader & { cancelled: boolean } {
  const queue = [...chunks];
  return {
    cancelled: false,
    read() {
      const value = queue.shift();
      return Promise.resolve(value ? { done: false, value } : { done: true });
    },
    cancel() {
      this.cancelled = true;
      return Promise.resolve();
    },
  };
}

const utf8 = (text: string) => new TextEncoder().encode(text);

describe('SseParser', () => {
  it('dispatches an event at each blank line, joining data lines', () => {
    const parser = new SseParser();
    expect(parser.push('data: {"a":1}\n\ndata: x\ndata: y\n\n')).toEqual([
      { event: 'message', data: '{"a":1}' },
      { event: 'message', data: 'x\ny' },
    ]);
  });

  it('keeps a partial line until its end arrives, whatever the split', () => {
    const text = 'data: first\n\n: keep-alive\n\nevent: note\ndata:second\n\ndata: [DONE]\n\n';
    const expected = [
      { event: 'message', data: 'first' },
      { event: 'note', data: 'second' },
      { event: 'message', data: '[DONE]' },
    ];
    for (let size = 1; size <= text.length; size += 1) {
      const parser = new SseParser();
      const events: SseEvent[] = [];
      for (let i = 0; i < text.length; i += size)
        events.push(...parser.push(text.slice(i, i + size)));
      expect(events).toEqual(expected);
    }
  });

  it('accepts CRLF and CR line ends, also with CRLF split across chunks', () => {
    const parser = new SseParser();
    expect(parser.push('data: a\r')).toEqual([]);
    expect(parser.push('\n\r\ndata: b\r\rdata: c\n\n')).toEqual([
      { event: 'message', data: 'a' },
      { event: 'message', data: 'b' },
      { event: 'message', data: 'c' },
    ]);
  });

  it('ignores comments, unknown fields, and an event cut off by the end of the stream', () => {
    const parser = new SseParser();
    expect(parser.push(': comment\nid: 7\nretry: 10\nfoo: bar\n\ndata: cut')).toEqual([]);
    expect(parser.end()).toEqual([]);
    expect(parser.push('data: after\n\n')).toEqual([{ event: 'message', data: 'after' }]);
  });

  it('strips one space after the colon only, and takes a field with no colon as empty', () => {
    const parser = new SseParser();
    expect(parser.push('data:  two spaces\ndata\n\n')).toEqual([
      { event: 'message', data: ' two spaces\n' },
    ]);
  });
});

describe('readSseStream', () => {
  it('decodes UTF-8 split across chunks and reports events as their bytes arrive', async () => {
    const bytes = utf8('data: {"t":"héllo ✓"}\n\ndata: [DONE]\n\n');
    // Split inside the two-byte é and the three-byte ✓.
    const cuts = [9, 15, 18, 21, bytes.length];
    const chunks = cuts.map((end, i) => bytes.slice(i === 0 ? 0 : cuts[i - 1], end));
    const events: string[] = [];
    await readSseStream(chunkedReader(chunks), (event) => void events.push(event.data));
    expect(events).toEqual(['{"t":"héllo ✓"}', '[DONE]']);
  });

  it('stops reading and cancels the stream when the handler returns false', async () => {
    const reader = chunkedReader([utf8('data: 1\n\ndata: 2\n\n'), utf8('data: 3\n\n')]);
    const seen: string[] = [];
    await readSseStream(reader, (event) => {
      seen.push(event.data);
      return event.data !== '1';
    });
    expect(seen).toEqual(['1']);
    expect(reader.cancelled).toBe(true);
  });

  it('reads a real fetch Response body', async () => {
    const response = new Response('data: a\n\ndata: b\n\n', {
      headers: { 'content-type': 'text/event-stream' },
    });
    const events: string[] = [];
    await readSseStream(response.body!.getReader(), (event) => void events.push(event.data));
    expect(events).toEqual(['a', 'b']);
  });
});
