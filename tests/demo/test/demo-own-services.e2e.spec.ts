/**
 * `npm run demo` for a user who is not root and whose Postgres and Redis do not answer: the
 * demo starts the installed server binaries itself (initdb + pg_ctl, redis-server) in a
 * data directory of its own, on the URLs' loopback ports, and runs the whole job against
 * them. As root (CI), the demo runs as user `nobody` through `runuser`, because Postgres
 * refuses to run as root and root takes the ensure-services.sh path instead. When `nobody`
 * cannot read the checkout (cloned into /root/x or a `mktemp -d` directory), it runs from a
 * copy it can read (`readableCheckout`, issue 14 item 21).
 */
import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { REPO_ROOT, runDemo } from './demo-process';
import { readableCheckout, type ReadableCheckout } from './readable-checkout';
import { freePort } from '@lorafleet/testing';

const NOBODY = 65534;

jest.setTimeout(180_000);

describe('npm run demo without root and without running servers', () => {
  const asRoot = process.getuid?.() === 0;
  const base = mkdtempSync(path.join(tmpdir(), 'lorafleet-demo-own-'));
  const runDir = path.join(base, 'run');
  const servicesDir = path.join(base, 'services');
  let pgPort = 0;
  let redisPort = 0;
  let checkout: ReadableCheckout | undefined;

  beforeAll(async () => {
    pgPort = await freePort();
    redisPort = await freePort();
    if (asRoot) {
      chownSync(base, NOBODY, NOBODY);
      checkout = readableCheckout(REPO_ROOT, 'nobody');
      if (checkout.how !== 'in place') {
        console.log(
          `nobody cannot read ${REPO_ROOT}: the demo runs from a ${checkout.how} in ${checkout.root}`,
        );
      }
    }
  });

  afterAll(() => {
    // Stop the servers the demo left running (as their owner), then remove everything.
    const pgData = path.join(servicesDir, `postgres-${pgPort}`);
    const stop = (command: string, args: string[]) =>
      asRoot
        ? spawnSync('runuser', ['-u', 'nobody', '--', command, ...args])
        : spawnSync(command, args);
    const pgCtl = ['/usr/local/bin/pg_ctl', ...postgresCtlCandidates()].find((p) => existsSync(p));
    if (pgCtl && existsSync(pgData)) stop(pgCtl, ['-D', pgData, '-m', 'immediate', 'stop']);
    const pidFile = path.join(servicesDir, `redis-${redisPort}`, 'redis.pid');
    if (existsSync(pidFile)) stop('kill', [readFileSync(pidFile, 'utf8').trim()]);
    rmSync(base, { recursive: true, force: true });
    checkout?.remove();
  });

  it('starts its own Postgres and Redis from the installed binaries and runs the job', async () => {
    const env = {
      ...process.env,
      HOME: base,
      NO_COLOR: '1',
      LORAFLEET_DEMO_SKIP_BUILD: '1',
      LORAFLEET_DEMO_STEPS: '10',
      LORAFLEET_DEMO_TEST_LIMIT: '5',
      LORAFLEET_DEMO_DIR: runDir,
      LORAFLEET_DEMO_SERVICES_DIR: servicesDir,
      DATABASE_URL: `postgres://postgres@127.0.0.1:${pgPort}/postgres`,
      REDIS_URL: `redis://127.0.0.1:${redisPort}`,
    };
    const root = checkout?.root ?? REPO_ROOT;
    const text = asRoot
      ? await runDemo(
          env,
          'runuser',
          [
            '-u',
            'nobody',
            '--',
            'env',
            ...envArgs(env),
            process.execPath,
            path.join(root, 'tools/demo/demo.mjs'),
          ],
          root,
        )
      : await runDemo(env);

    expect(text).toContain(`initialising a Postgres cluster in ${servicesDir}/postgres-${pgPort}/`);
    expect(text).toMatch(
      new RegExp(
        `own Postgres 127\\.0\\.0\\.1:${pgPort} and Redis 127\\.0\\.0\\.1:${redisPort} started`,
      ),
    );
    expect(existsSync(path.join(servicesDir, `postgres-${pgPort}`, 'PG_VERSION'))).toBe(true);
    expect(existsSync(path.join(servicesDir, `redis-${redisPort}`, 'redis.pid'))).toBe(true);
    // The whole job ran against them: adapter downloaded, evaluation done, DEMO line printed.
    expect(existsSync(path.join(runDir, 'adapter', 'adapter_model.safetensors'))).toBe(true);
    expect(text.trim().split('\n').pop()).toMatch(
      /^DEMO metric=accuracy base=\d+\.\d{3} adapter=\d+\.\d{3} wall_s=\d+$/,
    );
    const demoEnv = readFileSync(path.join(runDir, 'demo.env'), 'utf8');
    expect(demoEnv).toContain(`127.0.0.1:${pgPort}`);
    expect(demoEnv).toContain(`REDIS_URL=redis://127.0.0.1:${redisPort}`);
  });
});

/** `KEY=value` arguments for `env`, since runuser does not pass the environment through. */
function envArgs(env: NodeJS.ProcessEnv): string[] {
  return Object.entries(env)
    .filter(([key, value]) => value !== undefined && !key.startsWith('npm_') && key !== 'INIT_CWD')
    .map(([key, value]) => `${key}=${value}`);
}

/** Debian's pg_ctl lives in /usr/lib/postgresql/<version>/bin. */
function postgresCtlCandidates(): string[] {
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return [];
  return readdirSync(base).map((version) => path.join(base, version, 'bin', 'pg_ctl'));
}
