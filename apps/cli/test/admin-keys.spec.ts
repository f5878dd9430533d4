/**
 * `lorafleet admin create-key` / `revoke-key` as an operator runs them: the built binary
 * against the real Postgres (the fixture's scratch database) and the real api, which must
 * accept a created key and answer 401 to a revoked one (R20).
 */
import { TenantsRepository, createDataSource } from '@lorafleet/db';
import { createHash } from 'node:crypto';
import type { DataSource } from 'typeorm';

import { runCli, startRemoteFixture, type RemoteFixture } from './remote-harness';

jest.setTimeout(120_000);

let fx: RemoteFixture;
let db: DataSource;
let tenants: TenantsRepository;

/** `lorafleet admin …` with the fixture's DATABASE_URL. */
const admin = (...args: string[]) => runCli(['admin', ...args], { DATABASE_URL: fx.databaseUrl });

const status = async (key: string, path = '/v1/models'): Promise<number> =>
  (await fetch(`${fx.baseUrl}${path}`, { headers: { authorization: `Bearer ${key}` } })).status;

beforeAll(async () => {
  fx = await startRemoteFixture();
  db = createDataSource({ url: fx.databaseUrl, poolSize: 1 });
  await db.initialize();
  tenants = new TenantsRepository(db);
  await tenants.createTenant('acme');
  // Names are not unique: two tenants called "twins".
  await tenants.createTenant('twins');
  await tenants.createTenant('twins');
});

afterAll(async () => {
  if (db?.isInitialized) await db.destroy();
  await fx?.close();
});

describe('lorafleet admin create-key', () => {
  it('prints only the key, which authenticates against the api; Postgres holds only its SHA-256', async () => {
    const created = await admin('create-key', '--tenant', 'acme');
    expect(created.code).toBe(0);
    expect(created.stderr).toBe('');
    const key = created.stdout.trim();
    expect(created.stdout).toBe(`${key}\n`);
    expect(key).toMatch(/^lf-[A-Za-z0-9_-]{43}$/);
    expect(await status(key)).toBe(200);
    // A plain key is not an admin key.
    expect(await status(key, '/v1/workers')).toBe(403);

    const digest = createHash('sha256').update(key).digest('hex');
    const rows = await db.query<{ key_hash: string; is_admin: boolean }[]>(
      'SELECT key_hash, is_admin FROM api_keys WHERE key_hash = $1',
      [digest],
    );
    expect(rows).toEqual([{ key_hash: digest, is_admin: false }]);
    const plaintextAnywhere = await db.query<unknown[]>(
      'SELECT 1 FROM api_keys WHERE key_hash = $1 OR key_prefix = $1 OR id = $1',
      [key],
    );
    expect(plaintextAnywhere).toEqual([]);
  });

  it('--admin --json prints {"key", "id", "tenant_id", "is_admin"}; the key may list workers', async () => {
    const created = await admin('create-key', '--tenant', fx.tenantId, '--admin', '--json');
    expect(created.code).toBe(0);
    const body = JSON.parse(created.stdout) as Record<string, unknown>;
    expect(body).toEqual({
      key: expect.stringMatching(/^lf-/),
      id: expect.stringMatching(/^key-/),
      tenant_id: fx.tenantId,
      is_admin: true,
      is_fleet_admin: false,
    });
    expect(await status(body.key as string, '/v1/workers')).toBe(200);
  });

  it('--fleet-admin --json prints a fleet admin key, a kind of its own (issue 14)', async () => {
    const created = await admin('create-key', '--tenant', fx.tenantId, '--fleet-admin', '--json');
    expect(created.code).toBe(0);
    const body = JSON.parse(created.stdout) as Record<string, unknown>;
    expect(body).toMatchObject({ is_admin: true, is_fleet_admin: true });
    expect(await status(body.key as string, '/v1/workers')).toBe(200);
  });

  it('takes a tenant id when names are ambiguous, and says so', async () => {
    const ambiguous = await admin('create-key', '--tenant', 'twins');
    expect(ambiguous.code).toBe(1);
    expect(ambiguous.stdout).toBe('');
    const twins = await tenants.findByNameOrId('twins');
    expect(ambiguous.stderr).toContain(`2 tenants are named "twins"`);
    for (const twin of twins) expect(ambiguous.stderr).toContain(twin.id);
    const byId = await admin('create-key', '--tenant', twins[1].id, '--json');
    expect(byId.code).toBe(0);
    expect(JSON.parse(byId.stdout)).toMatchObject({ tenant_id: twins[1].id, is_admin: false });
  });

  it('exits 1 for an unknown tenant and creates nothing', async () => {
    const before = await db.query<{ n: string }[]>('SELECT count(*) AS n FROM api_keys');
    const result = await admin('create-key', '--tenant', 'nobody');
    expect(result.code).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr).toMatch(/no tenant named "nobody"/);
    expect(await db.query('SELECT count(*) AS n FROM api_keys')).toEqual(before);
  });

  it.each([
    [[], /--tenant is required/],
    [['--tenant'], /--tenant/],
    [['--tenant', ''], /--tenant is required/],
    [['--tenant', 'acme', 'extra'], /unexpected argument "extra"/],
    [['--tenant', 'acme', '--bogus'], /Unknown option '--bogus'/],
  ])('exits 2 on bad arguments %j', async (args, message) => {
    const result = await admin('create-key', ...args);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
    expect(result.stderr).toMatch(message);
    expect(result.stderr).toMatch(/Usage: lorafleet admin create-key/);
  });

  it('--help exits 0; without DATABASE_URL it exits 78 naming the setting', async () => {
    const help = await admin('create-key', '--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: lorafleet admin create-key/);
    const noDb = await runCli(['admin', 'create-key', '--tenant', 'acme'], {
      DATABASE_URL: undefined,
    });
    expect(noDb.code).toBe(78);
    expect(noDb.stderr).toMatch(/DATABASE_URL/);
  });
});

describe('lorafleet admin revoke-key', () => {
  it('revokes by key: the api answers 401 on the next request', async () => {
    const key = (await admin('create-key', '--tenant', 'acme')).stdout.trim();
    expect(await status(key)).toBe(200);
    const revoked = await admin('revoke-key', key);
    expect(revoked.code).toBe(0);
    expect(revoked.stdout).toMatch(/^Revoked API key key-\S+ \(lf-\S+…\) of tenant org-/);
    expect(revoked.stdout).not.toContain(key);
    const answer = await fetch(`${fx.baseUrl}/v1/models`, {
      headers: { authorization: `Bearer ${key}` },
    });
    expect(answer.status).toBe(401);
    expect(await answer.json()).toEqual({
      error: expect.objectContaining({ code: 'invalid_api_key', type: 'authentication_error' }),
    });
  });

  it('revokes by id; revoking again is reported and exits 0', async () => {
    const created = JSON.parse(
      (await admin('create-key', '--tenant', 'acme', '--json')).stdout,
    ) as { key: string; id: string };
    expect(await status(created.key)).toBe(200);
    const revoked = await admin('revoke-key', created.id, '--json');
    expect(revoked.code).toBe(0);
    expect(JSON.parse(revoked.stdout)).toMatchObject({
      id: created.id,
      revoked: true,
      already_revoked: false,
    });
    expect(await status(created.key)).toBe(401);
    const again = await admin('revoke-key', created.id);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/was already revoked/);
    // The fixture's own key was untouched.
    expect(await status(fx.apiKey)).toBe(200);
  });

  it('exits 1 for an unknown key or id', async () => {
    for (const unknown of ['key-doesnotexist', 'lf-not-a-real-key']) {
      const result = await admin('revoke-key', unknown);
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/no such API key/);
    }
  });

  it.each([[[]], [['a', 'b']], [['--bogus', 'x']], [['']]])(
    'exits 2 on bad arguments %j',
    async (args) => {
      const result = await admin('revoke-key', ...args);
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(/Usage: lorafleet admin revoke-key/);
    },
  );

  it('lists create-key and revoke-key under "admin"', async () => {
    const result = await runCli(['admin', 'frobnicate']);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/create-key/);
    expect(result.stderr).toMatch(/revoke-key/);
  });
});
