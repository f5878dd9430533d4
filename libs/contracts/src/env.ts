import { z } from 'zod';

/** Thrown when process configuration is invalid; the message names each bad variable. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/**
 * Validates environment variables once at boot (STYLE: refuse to start on bad env). Unknown
 * variables are ignored; every problem is reported at once, by variable name.
 */
export function parseEnv<T extends z.ZodRawShape>(
  shape: T,
  env: Record<string, string | undefined> = process.env,
): z.infer<z.ZodObject<T>> {
  const result = z.object(shape).safeParse(env);
  if (!result.success) {
    throw new ConfigError(
      result.error.issues.map((issue) => {
        const name = issue.path.join('.');
        const value = env[name];
        const shown = value === undefined ? 'unset' : `got ${JSON.stringify(value)}`;
        return `${name}: ${issue.message} (${shown})`;
      }),
    );
  }
  return result.data;
}

const urlWithProtocols = (protocols: string[], example: string) =>
  z.string({ message: `required, e.g. ${example}` }).refine(
    (value) => {
      try {
        return protocols.includes(new URL(value).protocol);
      } catch {
        return false;
      }
    },
    `must be a ${protocols.join(' or ')} URL such as ${example}`,
  );

const intFromEnv = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

/** Variables shared by api, worker and cli (DESIGN §8). */
export const commonEnvShape = {
  DATABASE_URL: urlWithProtocols(
    ['postgres:', 'postgresql:'],
    'postgres://postgres@127.0.0.1:5432/lorafleet',
  ),
  REDIS_URL: urlWithProtocols(['redis:', 'rediss:'], 'redis://127.0.0.1:6379'),
  LORAFLEET_MODELS_DIR: z.string().min(1).default('./models'),
  /** BullMQ key prefix; lets several deployments (or test runs) share one Redis. */
  LORAFLEET_QUEUE_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_-]+$/)
    .default('lorafleet'),
};

export const apiEnvShape = {
  ...commonEnvShape,
  PORT: intFromEnv(0, 65535).default(3000),
  HOST: z.string().min(1).default('0.0.0.0'),
  LORAFLEET_UPLOAD_MAX_BYTES: intFromEnv(1, 1 << 30).default(50 * 1024 * 1024),
  LORAFLEET_UPLOAD_MAX_ROWS: intFromEnv(1, 10_000_000).default(100_000),
  /** Longest JSONL line in UTF-8 bytes; a longer one puts the file in `status: "error"`. */
  LORAFLEET_UPLOAD_MAX_LINE_BYTES: intFromEnv(1, 1 << 30).default(1024 * 1024),
  LORAFLEET_MIN_EXAMPLES: intFromEnv(1, 1_000_000).default(10),
  LORAFLEET_OUTBOX_POLL_MS: intFromEnv(50, 60_000).default(1000),
  /** How often the reconciler re-enqueues queued jobs that BullMQ lost (R1). */
  LORAFLEET_RECONCILE_MS: intFromEnv(100, 3_600_000).default(30_000),
  /** Jobs not yet finished (queued, running, paused) per tenant; more → 429 (R21). */
  LORAFLEET_MAX_ACTIVE_JOBS_PER_TENANT: intFromEnv(1, 100_000).default(20),
  LORAFLEET_LOG_LEVEL: z.enum(['error', 'warn', 'log', 'debug']).default('log'),
  /**
   * On SIGTERM: time in-flight requests have to finish; then open connections are closed and
   * the process exits 1. Below Docker's default 10 s stop timeout.
   */
  LORAFLEET_SHUTDOWN_GRACE_MS: intFromEnv(100, 3_600_000).default(8000),
  /**
   * Completions (issue 19): longest wait for a serving worker's first token. It covers a
   * base model's lazy load on its first request, so it is generous.
   */
  LORAFLEET_SERVE_FIRST_TOKEN_TIMEOUT_MS: intFromEnv(100, 3_600_000).default(120_000),
  /** Longest silence between two tokens before the worker is presumed dead (504). */
  LORAFLEET_SERVE_TOKEN_TIMEOUT_MS: intFromEnv(100, 3_600_000).default(30_000),
  /** Webhooks (issue 20): delay before the first retry of a failed delivery; each later one doubles. */
  LORAFLEET_WEBHOOK_RETRY_BASE_MS: intFromEnv(10, 3_600_000).default(5000),
  /** How long a delivery keeps being retried, from its creation; then it is marked failed. */
  LORAFLEET_WEBHOOK_MAX_AGE_MS: intFromEnv(1000, 30 * 24 * 3_600_000).default(72 * 3_600_000),
  /** One delivery attempt's limit (connect, send, response); longer counts as a failure. */
  LORAFLEET_WEBHOOK_TIMEOUT_MS: intFromEnv(100, 120_000).default(10_000),
  /**
   * `1` lets webhook URLs resolve to private, loopback, link-local and other non-public
   * addresses (tests, private deployments). Off by default: a webhook is a server-side request.
   */
  LORAFLEET_WEBHOOK_ALLOW_PRIVATE: z.enum(['0', '1']).default('0'),
};
export type ApiEnv = z.infer<z.ZodObject<typeof apiEnvShape>>;

/** Whole MiB, digits only: the same rule as lora-core's `memoryLimitMbFromEnv`. */
const memoryLimitMb = z
  .string()
  .trim()
  .regex(/^[1-9][0-9]*$/, 'must be a positive whole number of MiB')
  .transform(Number);

/**
 * The backends a worker or `lorafleet train --backend` may ask for (DESIGN §8): `auto` walks
 * them in this order of speed, `gpu` is tfjs-node-gpu; lora-core's `selectBackend` turns one
 * into an initialised tfjs backend. The one list: the env schema, the CLI and lora-core use it.
 */
export const REQUESTED_BACKENDS = [
  'auto',
  'gpu',
  'tensorflow',
  'webgpu',
  'wasm-blas',
  'wasm',
  'cpu-blas',
  'cpu',
] as const;
export type RequestedBackend = (typeof REQUESTED_BACKENDS)[number];

export const WORKER_ROLES = ['train', 'serve'] as const;
export type WorkerRole = (typeof WORKER_ROLES)[number];

/** A comma-separated list of roles, each at most once: `train`, `serve` or `train,serve`. */
const workerRoles = z
  .string()
  .transform((value) => value.split(',').map((role) => role.trim()))
  .pipe(
    z
      .array(
        z.enum(WORKER_ROLES, { message: `each role must be one of ${WORKER_ROLES.join(', ')}` }),
      )
      .min(1)
      .refine((roles) => new Set(roles).size === roles.length, 'a role is listed twice'),
  );

export const workerEnvShape = {
  ...commonEnvShape,
  LORAFLEET_BACKEND: z.enum(REQUESTED_BACKENDS).default('auto'),
  LORAFLEET_WORKER_CONCURRENCY: intFromEnv(1, 64).default(1),
  LORAFLEET_WORKER_ID: z
    .string()
    .regex(/^[A-Za-z0-9._-]+$/)
    .optional(),
  LORAFLEET_LOCK_MS: intFromEnv(500, 3_600_000).default(30_000),
  LORAFLEET_STALLED_MS: intFromEnv(100, 3_600_000).default(30_000),
  LORAFLEET_MAX_ATTEMPTS: intFromEnv(1, 100).default(3),
  LORAFLEET_HEARTBEAT_MS: intFromEnv(100, 600_000).default(5000),
  /** A trainer silent for this long is presumed hung and killed (R10). */
  LORAFLEET_WATCHDOG_MS: intFromEnv(1000, 86_400_000).default(600_000),
  /** On SIGTERM: time to checkpoint and hand the job back before exiting (R12). */
  LORAFLEET_SHUTDOWN_GRACE_MS: intFromEnv(100, 3_600_000).default(60_000),
  LORAFLEET_CHECKPOINT_EVERY_STEPS: intFromEnv(1, 1_000_000).default(50),
  LORAFLEET_CHECKPOINT_EVERY_SECONDS: intFromEnv(1, 86_400).default(300),
  LORAFLEET_CHECKPOINT_KEEP: intFromEnv(1, 1000).default(3),
  /** First retry delay; doubles per failure (R13). */
  LORAFLEET_RETRY_BACKOFF_MS: intFromEnv(0, 3_600_000).default(5000),
  /** How often a running attempt re-reads its job row for cancel, pause and lease loss. */
  LORAFLEET_CONTROL_POLL_MS: intFromEnv(100, 60_000).default(1000),
  LORAFLEET_LOG_LEVEL: z.enum(['error', 'warn', 'log', 'debug']).default('log'),
  /**
   * The trainer's memory budget in MiB; a job whose pre-flight estimate exceeds it is refused
   * before step 1 (handed to a worker with more, or failed). Unset: the cgroup limit, else 90%
   * of RAM (lora-core `memoryLimitMbFromEnv`, which reads it with this same rule).
   */
  LORAFLEET_MEMORY_LIMIT_MB: memoryLimitMb.optional(),
  /** What this worker does (issue 19): `train` (the BullMQ queue), `serve` (completions), or both. */
  LORAFLEET_WORKER_ROLES: workerRoles.default(['train', 'serve']),
  /** Budget of the serving adapter cache (LRU by bytes of adapter tensors), per loaded base. */
  LORAFLEET_SERVE_ADAPTER_CACHE_MB: intFromEnv(1, 1_048_576).default(512),
  /** Most completion requests decoded together in one batch, per loaded base. */
  LORAFLEET_SERVE_MAX_BATCH: intFromEnv(1, 256).default(16),
  /**
   * Key/value cache budget of the decode batch in MiB, per loaded base: a request waits until
   * the batch's cache fits, and one that alone exceeds it is a 400. Unset: a quarter of the
   * memory limit (LORAFLEET_MEMORY_LIMIT_MB as resolved).
   */
  LORAFLEET_SERVE_KV_CACHE_MB: intFromEnv(1, 1_048_576).optional(),
  /**
   * A serving request read by a worker that has been silent this long (no heartbeat on its
   * pending entry) is taken over by another serving worker, if it had no reply yet (ADR 0006).
   * Live workers refresh their pending entries every quarter of this.
   */
  LORAFLEET_SERVE_CLAIM_IDLE_MS: intFromEnv(200, 3_600_000).default(10_000),
};
export type WorkerEnv = z.infer<z.ZodObject<typeof workerEnvShape>>;
