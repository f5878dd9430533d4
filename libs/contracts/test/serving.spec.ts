import {
  ChatCompletionRequestSchema,
  CompletionRequestSchema,
  ConfigError,
  ServeReplySchema,
  parseEnv,
  workerEnvShape,
} from '../src';

const DB = { DATABASE_URL: 'postgres://h/db', REDIS_URL: 'redis://h' };

describe('LORAFLEET_WORKER_ROLES', () => {
  it('defaults to train and serve, and parses each allowed list', () => {
    expect(parseEnv(workerEnvShape, DB).LORAFLEET_WORKER_ROLES).toEqual(['train', 'serve']);
    expect(
      parseEnv(workerEnvShape, { ...DB, LORAFLEET_WORKER_ROLES: 'serve' }).LORAFLEET_WORKER_ROLES,
    ).toEqual(['serve']);
    expect(
      parseEnv(workerEnvShape, { ...DB, LORAFLEET_WORKER_ROLES: ' serve , train' })
        .LORAFLEET_WORKER_ROLES,
    ).toEqual(['serve', 'train']);
  });

  it.each(['', 'infer', 'train,train', 'train,,serve'])(
    'refuses %j, naming the variable',
    (value) => {
      expect(() => parseEnv(workerEnvShape, { ...DB, LORAFLEET_WORKER_ROLES: value })).toThrow(
        /LORAFLEET_WORKER_ROLES/,
      );
      expect(() => parseEnv(workerEnvShape, { ...DB, LORAFLEET_WORKER_ROLES: value })).toThrow(
        ConfigError,
      );
    },
  );
});

describe('serving takeover and KV-cache settings', () => {
  it('default to a 10 s claim idle time and a budget derived from the memory limit', () => {
    const env = parseEnv(workerEnvShape, DB);
    expect(env.LORAFLEET_SERVE_CLAIM_IDLE_MS).toBe(10_000);
    expect(env.LORAFLEET_SERVE_KV_CACHE_MB).toBeUndefined();
    const set = parseEnv(workerEnvShape, {
      ...DB,
      LORAFLEET_SERVE_CLAIM_IDLE_MS: '2000',
      LORAFLEET_SERVE_KV_CACHE_MB: '64',
    });
    expect([set.LORAFLEET_SERVE_CLAIM_IDLE_MS, set.LORAFLEET_SERVE_KV_CACHE_MB]).toEqual([
      2000, 64,
    ]);
  });

  it.each([
    ['LORAFLEET_SERVE_CLAIM_IDLE_MS', '50'],
    ['LORAFLEET_SERVE_CLAIM_IDLE_MS', 'soon'],
    ['LORAFLEET_SERVE_KV_CACHE_MB', '0'],
    ['LORAFLEET_SERVE_KV_CACHE_MB', '1.5'],
  ])('refuses %s=%j, naming the variable', (name, value) => {
    expect(() => parseEnv(workerEnvShape, { ...DB, [name]: value })).toThrow(new RegExp(name));
  });
});

describe('completion request schemas', () => {
  it('normalises stop, content parts and the developer role', () => {
    const body = ChatCompletionRequestSchema.parse({
      model: 'm',
      messages: [
        { role: 'developer', content: 'be brief' },
        {
          role: 'user',
          content: [
            { type: 'text', text: 'hi' },
            { type: 'text', text: '!' },
          ],
        },
      ],
      stop: 'END',
    });
    expect(body.messages).toEqual([
      { role: 'system', content: 'be brief' },
      { role: 'user', content: 'hi!' },
    ]);
    expect(body.stop).toEqual(['END']);
    expect(CompletionRequestSchema.parse({ model: 'm', prompt: [1, 2] }).stop).toEqual([]);
  });

  it.each([
    ['n = 2', { n: 2 }, 'n'],
    ['five stop strings', { stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop'],
    ['temperature 3', { temperature: 3 }, 'temperature'],
    ['top_p 0', { top_p: 0 }, 'top_p'],
    ['max_tokens 0', { max_tokens: 0 }, 'max_tokens'],
    ['no messages', { messages: [] }, 'messages'],
    ['a tool message', { messages: [{ role: 'tool', content: 'x' }] }, 'messages'],
    [
      'an image part',
      { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: {} }] }] },
      'messages',
    ],
  ])('refuses %s', (_, patch, param) => {
    const result = ChatCompletionRequestSchema.safeParse({
      model: 'm',
      messages: [{ role: 'user', content: 'hi' }],
      ...patch,
    });
    expect(result.success).toBe(false);
    expect(result.error?.issues[0].path[0]).toBe(param);
  });

  it('refuses echo, suffix and an empty prompt on /v1/completions', () => {
    for (const patch of [{ echo: true }, { suffix: 'x' }, { prompt: '' }]) {
      expect(CompletionRequestSchema.safeParse({ model: 'm', prompt: 'p', ...patch }).success).toBe(
        false,
      );
    }
  });

  it('reads every reply kind and nothing else', () => {
    expect(ServeReplySchema.parse({ kind: 'delta', text: 'a', tokens: 1 }).kind).toBe('delta');
    expect(ServeReplySchema.safeParse({ kind: 'token' }).success).toBe(false);
  });
});
