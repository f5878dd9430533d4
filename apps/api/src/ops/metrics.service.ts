import { Inject, Injectable } from '@nestjs/common';
import { JOB_STATUSES, QUEUE_NAMES } from '@lorafleet/contracts';
import type { Queue } from 'bullmq';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { DataSource } from 'typeorm';
import { DATA_SOURCE, FINE_TUNE_QUEUE } from '../infra/tokens';
import { withTimeout } from './with-timeout';

/** BullMQ states reported as queue depth; `getJobCounts` answers all of them in one round trip. */
export const QUEUE_STATES = [
  'waiting',
  'active',
  'delayed',
  'prioritized',
  'waiting-children',
  'paused',
  'completed',
  'failed',
] as const;

/** Label for requests that matched no route: raw URLs would make label cardinality unbounded. */
export const UNMATCHED_ROUTE = 'unmatched';

const PROBE_TIMEOUT_MS = 1000;

let processRegistry: Registry | undefined;

/**
 * Node process metrics (CPU, heap, event-loop lag, GC) are per process, not per app, and
 * their collectors install process-wide observers: collect them once even when one process
 * hosts several API instances (tests, the benchmark).
 */
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

/**
 * Prometheus metrics of one API instance. HTTP latency is observed per request; the state
 * gauges (queue depth, jobs by status, outbox backlog) are read at scrape time, so a scrape
 * costs one BullMQ `getJobCounts` and two indexed Postgres aggregates, and a dependency
 * that is down turns its `lorafleet_dependency_up` to 0 instead of failing the scrape.
 */
@Injectable()
export class MetricsService {
  readonly registry = new Registry();

  private readonly httpDuration = new Histogram({
    name: 'lorafleet_http_request_duration_seconds',
    help: 'HTTP request duration by method, route template and status code',
    labelNames: ['method', 'route', 'status_code'] as const,
    // Dense below 100 ms, where the GET job and list targets sit (p99 ≤ 50 ms).
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });

  private readonly queueJobs = new Gauge({
    name: 'lorafleet_queue_jobs',
    help: 'BullMQ jobs by queue and state (absent while Redis is unreachable)',
    labelNames: ['queue', 'state'] as const,
    registers: [this.registry],
  });

  private readonly jobsByStatus = new Gauge({
    name: 'lorafleet_fine_tuning_jobs',
    help: 'Fine-tuning jobs in Postgres by status (absent while Postgres is unreachable)',
    labelNames: ['status'] as const,
    registers: [this.registry],
  });

  private readonly outboxPending = new Gauge({
    name: 'lorafleet_outbox_pending',
    help: 'Outbox entries committed but not yet enqueued to BullMQ',
    registers: [this.registry],
  });

  private readonly outboxOldestAge = new Gauge({
    name: 'lorafleet_outbox_oldest_pending_age_seconds',
    help: 'Age of the oldest undispatched outbox entry (0 when none)',
    registers: [this.registry],
  });

  private readonly webhookAttempts = new Counter({
    name: 'lorafleet_webhook_delivery_attempts_total',
    help: 'Webhook delivery attempts by outcome: delivered, failed (will retry), gave_up (retries exhausted)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  private readonly webhooksPending = new Gauge({
    name: 'lorafleet_webhook_deliveries_pending',
    help: 'Webhook deliveries not yet delivered and still being retried',
    registers: [this.registry],
  });

  private readonly dependencyUp = new Gauge({
    name: 'lorafleet_dependency_up',
    help: '1 when the last scrape reached the dependency, else 0',
    labelNames: ['dependency'] as const,
    registers: [this.registry],
  });

  constructor(
    @Inject(DATA_SOURCE) private readonly dataSource: DataSource,
    @Inject(FINE_TUNE_QUEUE) private readonly queue: Queue,
  ) {}

  get contentType(): string {
    return this.registry.contentType;
  }

  observeRequest(method: string, route: string | undefined, statusCode: number, ms: number): void {
    this.httpDuration.observe(
      { method, route: route ?? UNMATCHED_ROUTE, status_code: String(statusCode) },
      ms / 1000,
    );
  }

  /** Counts one webhook delivery attempt sent by this process's dispatcher. */
  observeWebhookAttempt(outcome: 'delivered' | 'failed' | 'gave_up'): void {
    this.webhookAttempts.inc({ outcome });
  }

  /** Refreshes the state gauges, then renders process and API metrics as one text page. */
  async render(): Promise<string> {
    await Promise.all([this.refreshQueue(), this.refreshDatabase()]);
    return (await processMetrics().metrics()) + (await this.registry.metrics());
  }

  private async refreshQueue(): Promise<void> {
    this.queueJobs.reset();
    try {
      const counts = await withTimeout(
        this.queue.getJobCounts(...QUEUE_STATES),
        PROBE_TIMEOUT_MS,
        'getJobCounts',
      );
      for (const state of QUEUE_STATES) {
        this.queueJobs.set({ queue: QUEUE_NAMES.fineTune, state }, counts[state] ?? 0);
      }
      this.dependencyUp.set({ dependency: 'redis' }, 1);
    } catch {
      this.dependencyUp.set({ dependency: 'redis' }, 0);
    }
  }

  private async refreshDatabase(): Promise<void> {
    this.jobsByStatus.reset();
    try {
      const [byStatus, outbox, webhooks] = await withTimeout(
        Promise.all([
          this.dataSource.query<{ status: string; n: number }[]>(
            'SELECT status, count(*)::int AS n FROM fine_tuning_jobs GROUP BY status',
          ),
          // The partial index idx_outbox_pending holds exactly these rows.
          this.dataSource.query<{ n: number; age: number | null }[]>(
            `SELECT count(*)::int AS n,
                    EXTRACT(EPOCH FROM now() - min(created_at))::float8 AS age
               FROM outbox WHERE dispatched_at IS NULL`,
          ),
          // The partial index idx_webhook_deliveries_due holds exactly these rows.
          this.dataSource.query<{ n: number }[]>(
            "SELECT count(*)::int AS n FROM webhook_deliveries WHERE status = 'pending'",
          ),
        ]),
        PROBE_TIMEOUT_MS,
        'metrics queries',
      );
      const counts = new Map(byStatus.map((row) => [row.status, row.n]));
      // Every status gets a series, so dashboards see 0 rather than a gap.
      for (const status of JOB_STATUSES) this.jobsByStatus.set({ status }, counts.get(status) ?? 0);
      this.outboxPending.set(outbox[0]?.n ?? 0);
      this.outboxOldestAge.set(Math.max(0, outbox[0]?.age ?? 0));
      this.webhooksPending.set(webhooks[0]?.n ?? 0);
      this.dependencyUp.set({ dependency: 'postgres' }, 1);
    } catch {
      this.dependencyUp.set({ dependency: 'postgres' }, 0);
    }
  }
}
