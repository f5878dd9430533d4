#!/usr/bin/env node
// `npm test`: builds the workspace (the end-to-end suites spawn the built api and worker),
// then runs each project's Jest suite one after another, printing each suite's duration and a
// closing "N passed, N failed" line. Suites run serially because several are timing
// sensitive (locks, stalls, child processes) on a 2-core machine.
//   npm test                  every suite
//   npm test -- api worker    only the named suites
// Suites that spawn the api and workers (libs/testing's NodeProcess) mirror those processes'
// output into a per-suite log directory; when a suite fails, the tail of each log is printed,
// so a CI failure shows what the servers said, not only the failed assertion.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const SUITES = [
  { name: 'contracts', config: 'libs/contracts/jest.config.cjs', area: 'foundation' },
  { name: 'workspace', config: 'tests/workspace/jest.config.cjs', area: 'foundation' },
  { name: 'testing', config: 'libs/testing/jest.config.cjs', area: 'foundation' },
  { name: 'db', config: 'libs/db/jest.config.cjs', area: 'foundation' },
  { name: 'data', config: 'libs/data/jest.config.cjs', area: 'lora-core' },
  { name: 'lora-core', config: 'libs/lora-core/jest.config.cjs', area: 'lora-core' },
  { name: 'cli', config: 'apps/cli/jest.config.cjs', area: 'lora-core' },
  { name: 'gpu-bundle', config: 'tests/gpu-bundle/jest.config.cjs', area: 'lora-core' },
  { name: 'api', config: 'apps/api/jest.config.cjs', area: 'api' },
  { name: 'worker', config: 'apps/worker/jest.config.cjs', area: 'worker' },
  { name: 'e2e', config: 'tests/e2e/jest.config.cjs', area: 'worker' },
  { name: 'demo', config: 'tests/demo/jest.config.cjs', area: 'demo' },
  { name: 'dashboard-unit', config: 'apps/dashboard/jest.config.cjs', area: 'dashboard' },
  { name: 'dashboard', config: 'tests/dashboard/jest.config.cjs', area: 'dashboard' },
];

const wanted = process.argv.slice(2);
const unknown = wanted.filter((w) => !SUITES.some((s) => s.name === w));
if (unknown.length > 0) {
  console.error(
    `unknown suite(s): ${unknown.join(', ')}; known: ${SUITES.map((s) => s.name).join(', ')}`,
  );
  process.exit(2);
}
const selected = wanted.length ? SUITES.filter((s) => wanted.includes(s.name)) : SUITES;

const run = (cmd, args, env = {}) =>
  spawnSync(cmd, args, { stdio: 'inherit', env: { ...process.env, ...env } }).status ?? 1;

const buildStart = Date.now();
console.log('== build ==');
if (run('npx', ['nx', 'run-many', '-t', 'build', '--output-style=stream']) !== 0) {
  console.error('build failed');
  process.exit(1);
}
console.log(`build: ${((Date.now() - buildStart) / 1000).toFixed(1)} s`);

const LOG_TAIL_LINES = 60;

/** The last lines of every process log a failed suite left (api, workers). */
function printLogTails(suiteName, logDir) {
  if (!existsSync(logDir)) return;
  for (const file of readdirSync(logDir).sort()) {
    const lines = readFileSync(path.join(logDir, file), 'utf8').trimEnd().split('\n');
    const shown = lines.slice(-LOG_TAIL_LINES);
    console.log(
      `\n-- ${suiteName}: ${file}, last ${shown.length} of ${lines.length} lines --\n${shown.join('\n')}`,
    );
  }
}

const reportDir = mkdtempSync(path.join(tmpdir(), 'lorafleet-tests-'));
const results = [];
for (const suite of selected) {
  console.log(`\n== suite ${suite.name} (${suite.area}) ==`);
  const started = Date.now();
  const reportFile = path.join(reportDir, `${suite.name}.json`);
  const logDir = path.join(reportDir, `${suite.name}-logs`);
  const status = run(
    'npx',
    // --forceExit: a handle a failed suite left open (a client retrying a dead server, say)
    // must not hang the whole run; the results are already written by then.
    [
      'jest',
      '-c',
      suite.config,
      '--runInBand',
      '--forceExit',
      '--json',
      `--outputFile=${reportFile}`,
    ],
    { LORAFLEET_TEST_LOG_DIR: logDir },
  );
  let passed = 0;
  let failed = 0;
  let total = 0;
  try {
    const report = JSON.parse(readFileSync(reportFile, 'utf8'));
    passed = report.numPassedTests;
    failed = report.numFailedTests + report.numRuntimeErrorTestSuites;
    total = report.numTotalTests;
  } catch {
    failed = 1; // Jest died before writing a report.
  }
  if (status !== 0 && failed === 0) failed = 1;
  if (total === 0 && failed === 0) failed = 1; // a suite that ran nothing is a failure
  if (failed > 0) printLogTails(suite.name, logDir);
  results.push({ ...suite, seconds: (Date.now() - started) / 1000, passed, failed });
}
rmSync(reportDir, { recursive: true, force: true });

console.log('\n== suite durations ==');
for (const r of results) {
  console.log(
    `${r.name.padEnd(10)} ${r.area.padEnd(10)} ${r.seconds.toFixed(1).padStart(7)} s  ${r.passed} passed, ${r.failed} failed`,
  );
}
const passed = results.reduce((n, r) => n + r.passed, 0);
const failed = results.reduce((n, r) => n + r.failed, 0);
console.log(`total: ${((Date.now() - buildStart) / 1000).toFixed(1)} s`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
