// Every `npm run bench:*` still runs end to end in its --smoke mode (CI never runs the full
// benchmarks), so a schema or API change that breaks a benchmark fails here instead of the
// next time somebody measures. Each asserts the figures its report must carry.
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';

const ROOT = resolve(__dirname, '../../..');

/** Runs `npm run -s bench:<name> -- --smoke --json` and returns its parsed JSON report. */
function smokeReport(name: string): Record<string, unknown> {
  const run = spawnSync('npm', ['run', '-s', `bench:${name}`, '--', '--smoke', '--json'], {
    cwd: ROOT,
    encoding: 'utf8',
    maxBuffer: 16 * 1024 * 1024,
  });
  if (run.status !== 0) {
    throw new Error(`bench:${name} --smoke exited ${run.status}:\n${run.stderr.slice(-4000)}`);
  }
  return JSON.parse(run.stdout) as Record<string, unknown>;
}

describe('benchmarks in --smoke mode', () => {
  it('bench:train measures every backend it can start, at a positive speed', () => {
    const report = smokeReport('train') as {
      results: { backend: string; tokens_per_second: number }[];
    };
    expect(report.results.map((r) => r.backend)).toEqual(expect.arrayContaining(['cpu', 'wasm']));
    for (const result of report.results) expect(result.tokens_per_second).toBeGreaterThan(0);
  }, 300_000);

  it('bench:api serves every scenario without an error and reports the issue 5 targets', () => {
    const report = smokeReport('api') as {
      results: { name: string; requests: number; errors: number }[];
      targets: Record<string, boolean>;
    };
    expect(report.results.map((r) => r.name)).toEqual(
      expect.arrayContaining(['GET job', 'GET list page (20)', 'POST job']),
    );
    for (const scenario of report.results) {
      expect(scenario).toMatchObject({ errors: 0 });
      expect(scenario.requests).toBeGreaterThan(0);
    }
    expect(Object.keys(report.targets)).toContain('GET job p99 <= 50 ms');
  }, 300_000);

  it('bench:worker trains every job with one and two workers and sizes a checkpoint', () => {
    const report = smokeReport('worker') as {
      results: { workers: number; jobs: number; succeeded: number }[];
      checkpoint_reference: { bytes: number };
    };
    expect(report.results.map((r) => r.workers)).toEqual([1, 2]);
    for (const result of report.results) expect(result.succeeded).toBe(result.jobs);
    expect(report.checkpoint_reference.bytes).toBeGreaterThan(0);
  }, 300_000);

  it('bench:serve streams through the API and in process, concurrently over several adapters, and times both transports', () => {
    interface ConcurrentFigures {
      adapters: number;
      tokensPerSecond: number;
      completionTokens: number;
      ttftMs: { p50: number; p99: number };
    }
    interface Transport {
      firstTokenMs: { p50: number };
      requestMs: { p50: number };
    }
    const report = smokeReport('serve') as {
      tokens: number;
      throughApi: { tokensPerSecond: { p50: number } };
      inProcess: { tokensPerSecond: { p50: number } };
      tokensPerSecondRatioP50: number;
      heterogeneous: {
        concurrency: number;
        tokens: number;
        rounds: number;
        inProcess: (ConcurrentFigures & { peakRssMb: number })[];
        throughApi: (ConcurrentFigures & {
          servingChildPeakRssMb: number;
          redisCommandsPerToken: number;
        })[];
        ratioMostToOneAdapter: { adapters: number; inProcess: number; throughApi: number };
      };
      transport: { redisStreams: Transport; bullmq: Transport };
    };
    expect(report.tokens).toBeGreaterThan(0);
    expect(report.throughApi.tokensPerSecond.p50).toBeGreaterThan(0);
    expect(report.inProcess.tokensPerSecond.p50).toBeGreaterThan(0);
    expect(report.tokensPerSecondRatioP50).toBeGreaterThan(0);

    // Smoke mode: 4 concurrent requests over 1 and 4 adapters, one round each.
    const { heterogeneous } = report;
    expect(heterogeneous.concurrency).toBe(4);
    for (const side of [heterogeneous.inProcess, heterogeneous.throughApi]) {
      expect(side.map((row) => row.adapters)).toEqual([1, 4]);
      for (const row of side) {
        expect(row.tokensPerSecond).toBeGreaterThan(0);
        // Every request produced its tokens (in process no stop token can end one early).
        expect(row.completionTokens).toBeGreaterThan(0);
        expect(row.ttftMs.p99).toBeGreaterThanOrEqual(row.ttftMs.p50);
      }
    }
    for (const row of heterogeneous.inProcess) {
      expect(row.completionTokens).toBe(
        heterogeneous.concurrency * heterogeneous.tokens * heterogeneous.rounds,
      );
      expect(row.peakRssMb).toBeGreaterThan(0);
    }
    for (const row of heterogeneous.throughApi) {
      // The worker's serving child was found and measured; every token cost Redis commands.
      expect(row.servingChildPeakRssMb).toBeGreaterThan(0);
      expect(row.redisCommandsPerToken).toBeGreaterThan(0);
    }
    expect(heterogeneous.ratioMostToOneAdapter).toMatchObject({ adapters: 4 });
    expect(heterogeneous.ratioMostToOneAdapter.inProcess).toBeGreaterThan(0);
    expect(heterogeneous.ratioMostToOneAdapter.throughApi).toBeGreaterThan(0);
    for (const transport of [report.transport.redisStreams, report.transport.bullmq]) {
      expect(transport.firstTokenMs.p50).toBeGreaterThan(0);
      expect(transport.requestMs.p50).toBeGreaterThanOrEqual(transport.firstTokenMs.p50);
    }
  }, 300_000);
});
