// Cheap guards that CI stays wired: .ci/run installs, starts services, lints, typechecks and
// runs the README's test command, in that order; the shell scripts at least parse.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';

const ROOT = resolve(__dirname, '../../..');
const CI_RUN = join(ROOT, '.ci/run');
const ENSURE_SERVICES = join(ROOT, 'tools/scripts/ensure-services.sh');

/** Script lines without comments or blank lines. */
function codeLines(path: string): string[] {
  return readFileSync(path, 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
}

function firstLineMatching(lines: string[], pattern: RegExp): number {
  return lines.findIndex((l) => pattern.test(l));
}

describe('.ci/run', () => {
  const lines = codeLines(CI_RUN);

  it('is an executable bash script with strict mode', () => {
    expect(statSync(CI_RUN).mode & 0o111).not.toBe(0);
    expect(readFileSync(CI_RUN, 'utf8')).toMatch(/^#!\/usr\/bin\/env bash\n/);
    expect(lines).toContain('set -euo pipefail');
  });

  it.each([ENSURE_SERVICES, CI_RUN])('%s parses (bash -n)', (path) => {
    const result = spawnSync('bash', ['-n', path], { encoding: 'utf8' });
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
  });

  it('runs npm ci, ensure-services, the format check, lint, typecheck and then npm test, in that order', () => {
    const steps = [
      /\bnpm ci\b/,
      /tools\/scripts\/ensure-services\.sh\b/,
      /\bnpm run format:check\b/,
      /\bnpm run lint\b/,
      /\bnpm run typecheck\b/,
      /\bnpm test\b/,
    ].map((p) => firstLineMatching(lines, p));
    for (const index of steps) expect(index).toBeGreaterThanOrEqual(0);
    expect([...steps].sort((a, b) => a - b)).toEqual(steps);
  });

  it('points the tests at the loopback services and the fresh test database', () => {
    const text = lines.join('\n');
    expect(text).toMatch(
      /export DATABASE_URL="postgres:\/\/postgres@127\.0\.0\.1:5432\/\$\{LORAFLEET_TEST_DB\}"/,
    );
    expect(text).toMatch(/export LORAFLEET_TEST_DB="\$\{LORAFLEET_TEST_DB:-lorafleet_test\}"/);
    expect(text).toMatch(/export REDIS_URL="redis:\/\/127\.0\.0\.1:6379"/);
  });

  it('calls root scripts that exist', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
      scripts?: Record<string, string>;
    };
    for (const script of ['format:check', 'lint', 'typecheck', 'test']) {
      expect(pkg.scripts?.[script]).toBeTruthy();
    }
  });

  it('runs the same test command the README tells people to run', () => {
    const readme = join(ROOT, 'README.md');
    expect(existsSync(readme)).toBe(true);
    expect(readFileSync(readme, 'utf8')).toContain('npm test');
  });
});

describe('tools/scripts/ensure-services.sh', () => {
  it('is executable and recreates the database named by LORAFLEET_TEST_DB', () => {
    expect(statSync(ENSURE_SERVICES).mode & 0o111).not.toBe(0);
    const text = readFileSync(ENSURE_SERVICES, 'utf8');
    expect(text).toContain('LORAFLEET_TEST_DB:-lorafleet_test');
    expect(text).toMatch(/DROP DATABASE IF EXISTS/);
    expect(text).toMatch(/CREATE DATABASE/);
  });
});
