/**
 * The serving takeover's Lua scripts (ADR 0006, "Worker death") against a real Redis: the
 * heartbeat keeps a live worker's pending requests from being claimed without stealing back
 * one another worker claimed, and a request's first reply is written (and its entry
 * acknowledged) only by the worker that holds it, so exactly one worker ever answers it and a
 * request with a reply can no longer be claimed.
 */
import { Redis } from 'ioredis';
import { randomBytes } from 'node:crypto';
import { FIRST_REPLIES_LUA, HEARTBEAT_LUA } from '../src/serving/serving-scripts';

const GROUP = 'serving-workers';

describe('serving takeover scripts', () => {
  const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  const prefix = `lf-test-scripts-${randomBytes(4).toString('hex')}`;
  const stream = `${prefix}:serve:req:tiny`;
  const replies = (request: string) => `${prefix}:serve:tok:${request}`;

  afterAll(async () => {
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });

  const firstReplies = (worker: string, entryId: string, request: string, texts: string[]) =>
    redis.eval(
      FIRST_REPLIES_LUA,
      2,
      stream,
      replies(request),
      GROUP,
      worker,
      entryId,
      1024,
      60,
      ...texts.map((text) => JSON.stringify({ kind: 'delta', text, tokens: 1 })),
    );
  const heartbeat = (worker: string, ids: string[]) =>
    redis.eval(HEARTBEAT_LUA, 1, stream, GROUP, worker, ...ids) as Promise<string[]>;
  /** [id, consumer, idle ms, deliveries] of each pending entry. */
  const pending = () =>
    redis.xpending(stream, GROUP, '-', '+', 10) as Promise<[string, string, number, number][]>;

  it('lets only the holder of a request write its first reply, and never re-runs a started one', async () => {
    await redis.xgroup('CREATE', stream, GROUP, '0', 'MKSTREAM');
    const r1 = (await redis.xadd(stream, '*', 'request', 'r1'))!;
    const r2 = (await redis.xadd(stream, '*', 'request', 'r2'))!;
    await redis.xreadgroup('GROUP', GROUP, 'worker-a', 'COUNT', 10, 'STREAMS', stream, '>');

    // A's heartbeat resets the idle time of what it holds.
    await new Promise((resolve) => setTimeout(resolve, 60));
    const idleBefore = (await pending()).map(([, , idle]) => idle);
    expect(Math.min(...idleBefore)).toBeGreaterThanOrEqual(50);
    expect(await heartbeat('worker-a', [r1, r2])).toEqual([]);
    const afterBeat = await pending();
    afterBeat.forEach(([, owner, idle, deliveries], i) => {
      expect(owner).toBe('worker-a');
      expect(idle).toBeLessThan(idleBefore[i]);
      expect(deliveries).toBe(1); // JUSTID: not counted as a delivery
    });

    // A falls silent; B takes r1 over (min idle 0 here: the service passes its claim idle time).
    const [, claimed] = (await redis.xautoclaim(
      stream,
      GROUP,
      'worker-b',
      0,
      '0-0',
      'COUNT',
      1,
    )) as [string, [string, string[]][]];
    expect(claimed.map(([id]) => id)).toEqual([r1]);

    // A wakes up: its first reply for r1 is refused and writes nothing; its heartbeat names r1
    // as lost without taking it back, and still refreshes r2.
    expect(await firstReplies('worker-a', r1, 'r1', ['from A'])).toBe(0);
    expect(await redis.xlen(replies('r1'))).toBe(0);
    expect(await heartbeat('worker-a', [r1, r2])).toEqual([r1]);
    expect((await pending()).map(([id, owner]) => [id, owner])).toEqual([
      [r1, 'worker-b'],
      [r2, 'worker-a'],
    ]);

    // B answers r1: its replies in order, the entry acknowledged, the reply stream expiring.
    expect(await firstReplies('worker-b', r1, 'r1', ['Hello', ' world'])).toBe(1);
    const written = await redis.xrange(replies('r1'), '-', '+');
    expect(written.map(([, fields]) => JSON.parse(fields[1]) as { text: string })).toEqual([
      { kind: 'delta', text: 'Hello', tokens: 1 },
      { kind: 'delta', text: ' world', tokens: 1 },
    ]);
    expect(await redis.ttl(replies('r1'))).toBeGreaterThan(0);

    // A answers r2. Nothing is pending any more: a started request cannot be claimed.
    expect(await firstReplies('worker-a', r2, 'r2', ['ok'])).toBe(1);
    expect(await pending()).toEqual([]);
    const [, none] = (await redis.xautoclaim(stream, GROUP, 'worker-b', 0, '0-0')) as [
      string,
      unknown[],
    ];
    expect(none).toEqual([]);
  });
});
