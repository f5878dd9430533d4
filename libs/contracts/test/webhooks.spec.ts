import {
  CreateWebhookEndpointRequestSchema,
  JOB_STATUSES,
  TERMINAL_JOB_STATUSES,
  apiEnvShape,
  parseEnv,
  webhookEventForStatus,
} from '../src';

describe('webhook contracts (issue 20)', () => {
  it('maps exactly the terminal statuses to events', () => {
    for (const status of JOB_STATUSES) {
      const event = webhookEventForStatus(status);
      if (TERMINAL_JOB_STATUSES.includes(status)) {
        expect(event).toBe(`fine_tuning.job.${status}`);
      } else {
        expect(event).toBeNull();
      }
    }
  });

  it('accepts http(s) URLs and known, distinct events only', () => {
    const ok = { url: 'https://example.com/hooks?x=1', events: ['fine_tuning.job.failed'] };
    expect(CreateWebhookEndpointRequestSchema.parse(ok)).toEqual(ok);
    for (const [body, path] of [
      [{ ...ok, url: 'ftp://example.com' }, 'url'],
      [{ ...ok, url: 'https://' }, 'url'],
      [{ ...ok, url: 'example.com/hooks' }, 'url'],
      [{ ...ok, events: [] }, 'events'],
      [{ ...ok, events: ['fine_tuning.job.failed', 'fine_tuning.job.failed'] }, 'events'],
      [{ ...ok, events: ['fine_tuning.job.created'] }, 'events'],
      [{ url: ok.url }, 'events'],
    ] as const) {
      const result = CreateWebhookEndpointRequestSchema.safeParse(body);
      expect(result.success).toBe(false);
      expect(result.error?.issues[0].path[0]).toBe(path);
    }
  });

  it('defaults to a 5 s retry base, 72 h of retries, 10 s attempts and no private targets', () => {
    const env = parseEnv(apiEnvShape, { DATABASE_URL: 'postgres://h/db', REDIS_URL: 'redis://h' });
    expect(env).toMatchObject({
      LORAFLEET_WEBHOOK_RETRY_BASE_MS: 5000,
      LORAFLEET_WEBHOOK_MAX_AGE_MS: 72 * 3600 * 1000,
      LORAFLEET_WEBHOOK_TIMEOUT_MS: 10_000,
      LORAFLEET_WEBHOOK_ALLOW_PRIVATE: '0',
    });
    expect(() =>
      parseEnv(apiEnvShape, {
        DATABASE_URL: 'postgres://h/db',
        REDIS_URL: 'redis://h',
        LORAFLEET_WEBHOOK_ALLOW_PRIVATE: 'yes',
      }),
    ).toThrow(/LORAFLEET_WEBHOOK_ALLOW_PRIVATE/);
  });
});
