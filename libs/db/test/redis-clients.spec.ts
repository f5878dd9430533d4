/**
 * RedisClients (issue 14, items 13 and 15) against a private redis-server this suite kills:
 * an outage is logged once and its end once, whatever the number of clients and reconnect
 * attempts, and disconnectAll ends even a client that waits to reconnect.
 */
import { RedisConnection } from 'bullmq';
import type { Redis } from 'ioredis';
import { RedisClients, isRedisConnectionError } from '../src';
import { PrivateRedis, freePort } from '@lorafleet/testing';

jest.setTimeout(30_000);

async function until(what: string, probe: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

describe('RedisClients', () => {
  let redis: PrivateRedis;
  let lines: { level: 'warn' | 'log'; message: string }[];
  let clients: RedisClients;

  const logger = {
    warn: (message: string) => lines.push({ level: 'warn', message }),
    log: (message: string) => lines.push({ level: 'log', message }),
  };
  const ready = (client: Redis) =>
    until(`${client.options.connectionName ?? 'client'} ready`, () => client.status === 'ready');

  beforeAll(async () => {
    redis = new PrivateRedis(await freePort());
    await redis.start();
  });
  beforeEach(async () => {
    await redis.start();
    lines = [];
    clients = new RedisClients(redis.url, logger);
  });
  afterEach(() => clients.disconnectAll());
  afterAll(() => redis.stop());

  it('logs an outage once and its end once, for every client and duplicate together', async () => {
    const plain = clients.create('plain', { maxRetriesPerRequest: 1, enableOfflineQueue: false });
    const blocking = clients.create('blocking', { maxRetriesPerRequest: null });
    const duplicate = blocking.duplicate({ connectionName: 'dup' }); // as BullMQ's Worker does
    await Promise.all([ready(plain), ready(blocking), ready(duplicate)]);

    await redis.stop();
    await until('the outage line', () => lines.length > 0);
    await new Promise((resolve) => setTimeout(resolve, 1500)); // many reconnect attempts
    expect(clients.unreachable).toBe(true);
    expect(lines).toEqual([
      { level: 'warn', message: expect.stringMatching(/^redis unreachable \(\w+ connection: /) },
    ]);

    await redis.start();
    await until('the recovery line', () => lines.length > 1);
    await Promise.all([ready(plain), ready(blocking), ready(duplicate)]);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(clients.unreachable).toBe(false);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toEqual({
      level: 'log',
      message: expect.stringMatching(/^redis reachable again after \d+\.\d s$/),
    });
  });

  it('disconnectAll ends a client waiting to reconnect and fails what waited for Redis', async () => {
    const client = clients.create('blocking', { maxRetriesPerRequest: null });
    await ready(client);
    await redis.stop();
    await until('reconnecting', () => client.status === 'reconnecting');
    // With maxRetriesPerRequest null this waits for Redis for ever, as BullMQ's QUIT did.
    const pending = client.get('key');
    const ended = new Promise<void>((resolve) => client.once('end', () => resolve()));
    clients.disconnectAll();
    await expect(pending).rejects.toThrow(/Connection is closed/);
    await ended;
    expect(client.status).toBe('end');
  });

  it('tells connection errors from others', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), {
      code: 'ECONNREFUSED',
    });
    expect(isRedisConnectionError(refused)).toBe(true);
    expect(isRedisConnectionError(new Error('Connection is closed.'))).toBe(true);
    expect(isRedisConnectionError(new Error('Missing lock for job 1. moveToFinished'))).toBe(false);
    expect(isRedisConnectionError('ECONNREFUSED')).toBe(false);
  });
});

describe('BullMQ connections after close', () => {
  it("drops a closed connection's late error instead of throwing it (a stopped worker must not die of it)", async () => {
    // RedisClients installs the guard for the process.
    new RedisClients('redis://127.0.0.1:1', { warn: () => undefined, log: () => undefined });
    const port = await freePort(); // nothing listens there: initialisation is still failing
    const connection = new RedisConnection({
      host: '127.0.0.1',
      port,
      maxRetriesPerRequest: null,
      retryStrategy: () => null,
    });
    connection.on('error', () => undefined);
    await connection.close();
    expect(connection.status).toBe('closed');
    expect(connection.listenerCount('error')).toBe(0);
    // What BullMQ's pending `initializing.catch` does after close: before the guard, this threw.
    expect(() => connection.emit('error', new Error('read ECONNRESET'))).not.toThrow();
  });

  it('still throws an error nobody listens to on an open connection', () => {
    const connection = new RedisConnection({
      host: '127.0.0.1',
      port: 1,
      lazyConnect: true,
      maxRetriesPerRequest: null,
    });
    expect(() => connection.emit('error', new Error('unheard'))).toThrow('unheard');
    void connection.close().catch(() => undefined);
  });
});
