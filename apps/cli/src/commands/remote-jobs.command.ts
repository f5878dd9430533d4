/**
 * `lorafleet jobs create|list|get|watch|wait|cancel|pause|resume|events`: fine-tuning jobs
 * over REST (`/v1/fine_tuning/jobs`).
 */
import type {
  FineTuningJob,
  FineTuningJobEstimate,
  FineTuningJobEvent,
} from '@lorafleet/contracts';
import { readFile } from 'node:fs/promises';

import { parsePositiveInt, parsePositiveNumber, parseList } from '../cli-args.util';
import { EXIT_FAILURE, EXIT_OK, UsageError, type CliIo } from '../cli.io';
import type { RemoteClient } from '../remote/client';
import { estimateLines, eventLine, isoTime, jobLines, progressText, table } from '../remote/format';
import {
  CONNECTION_HELP,
  dispatchGroup,
  expectPositionals,
  reportRemoteError,
  runRemote,
  withUsage,
} from '../remote/remote-command';
import { ProgressPrinter, WatchTimeoutError, watchJob } from '../remote/watch';

export const JOBS_USAGE = `Usage: lorafleet jobs <command> [options]

Commands:
  create --model <m> --training-file <file-id> [...]   create a fine-tuning job
  list                       this tenant's jobs, newest first
  get <job-id>               one job: status, progress, hyperparameters, adapter
  watch <job-id>             follow a job with a progress bar (step, loss, ETA) until it ends;
                             exits 0 succeeded, 1 failed or cancelled, 2 usage or connection error
  wait <job-id>              the same as watch
  events <job-id>            the job's events (status changes, metrics, messages)
  cancel <job-id>            cancel a queued, running or paused job
  pause <job-id>             pause a running job (it keeps its checkpoint)
  resume <job-id>            requeue a paused job

Run "lorafleet jobs <command> --help" for a command's options.`;

const CREATE_USAGE = `Usage: lorafleet jobs create --model <base-model> --training-file <file-id> [options]

Creates a fine-tuning job (POST /v1/fine_tuning/jobs). Anything not given is left to the API
("auto" hyperparameters, PEFT's default target modules, ...).

Job:
  --model <name>                 base model, e.g. lorafleet-tiny-llama (see "lorafleet models list")
  --training-file <file-id>      an uploaded, processed training file
  --validation-file <file-id>    an uploaded validation file
  --suffix <text>                part of the fine-tuned model name
  --seed <n>                     random seed
  --metadata <k=v>               job metadata; repeat for several keys
  --idempotency-key <key>        send an Idempotency-Key header (safe retries)
  --body <file.json>             start from this request body; the flags override its fields
Hyperparameters (OpenAI):
  --n-epochs <n|auto>  --batch-size <n|auto>  --learning-rate-multiplier <x|auto>
LoRA:
  --lora-r <n>  --lora-alpha <a>  --lora-dropout <p>  --rslora
  --target-modules <a,b|all-linear>
Training:
  --learning-rate <lr>  --max-steps <n>  --max-seq-length <n>  --lr-scheduler <linear|cosine>
  --warmup-steps <n>  --weight-decay <x>  --gradient-accumulation-steps <n>  --eval-every-steps <n>
  --gradient-checkpointing       less activation memory for about one more forward pass
After creating:
  --watch                        follow the job as "jobs watch" does (and exit as it does)
Instead of creating:
  --dry-run                      create nothing: print what the job would train (tokens, steps,
                                 epochs), its peak memory, its wall time on each backend of the
                                 fleet and whether the quota admits it (POST
                                 /v1/fine_tuning/jobs/estimate); a body the API would refuse
                                 exits 1 with its message

${CONNECTION_HELP}`;

const LIST_USAGE = `Usage: lorafleet jobs list [--limit <n>] [--after <job-id>] [--status <s>] [--metadata <k=v>] [options]

${CONNECTION_HELP}`;

const GET_USAGE = `Usage: lorafleet jobs get <job-id> [options]

${CONNECTION_HELP}`;

const WATCH_USAGE = `Usage: lorafleet jobs watch <job-id> [--interval <s>] [--timeout <s>] [options]

Polls the job (with ETags, so an unchanged job costs a 304) and shows a progress bar with the
step, the training loss and the ETA, plus the job's status messages, until the job ends.
The bar goes to stderr; with --json the final job object is printed to stdout.
"jobs wait" is the same command.

Options:
  --interval <s>          seconds between polls (default 1)
  --timeout <s>           give up after this many seconds (exit 1)
  --quiet                 no progress bar, only the final line

Exit codes: 0 succeeded; 1 failed, cancelled or timed out; 2 bad usage or API unreachable.

${CONNECTION_HELP}`;

const EVENTS_USAGE = `Usage: lorafleet jobs events <job-id> [--limit <n>] [--after <event-id>] [options]

Prints one page of events, oldest first (the API pages newest first; --after pages back).

${CONNECTION_HELP}`;

const actionUsage = (
  action: string,
  what: string,
) => `Usage: lorafleet jobs ${action} <job-id> [options]

${what}

${CONNECTION_HELP}`;

const jobPath = (id: string) => `/v1/fine_tuning/jobs/${encodeURIComponent(id)}`;

const print = (io: CliIo, json: boolean, value: unknown, text: () => string) =>
  io.out(json ? JSON.stringify(value, null, 2) : text());

function parseMetadata(items: string[] | undefined): Record<string, string> | undefined {
  if (!items || items.length === 0) return undefined;
  const metadata: Record<string, string> = {};
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new UsageError(`--metadata must look like key=value (got "${item}")`);
    metadata[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return metadata;
}

function parseNumberOrAuto(
  value: string | undefined,
  flag: string,
  integer: boolean,
): number | 'auto' | undefined {
  if (value === undefined) return undefined;
  if (value === 'auto') return 'auto';
  return integer ? parsePositiveInt(value, flag) : parsePositiveNumber(value, flag);
}

function parseNonNegative(
  value: string | undefined,
  flag: string,
  integer: boolean,
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0 || (integer && !Number.isInteger(n))) {
    throw new UsageError(
      `${flag} must be a ${integer ? 'whole number' : 'number'} >= 0 (got "${value}")`,
    );
  }
  return n;
}

/** Sets `obj[key]` only when `value` is defined, creating nothing otherwise. */
function put(obj: Record<string, unknown>, key: string, value: unknown): void {
  if (value !== undefined) obj[key] = value;
}

const CREATE_OPTIONS = {
  model: { type: 'string' },
  'training-file': { type: 'string' },
  'validation-file': { type: 'string' },
  suffix: { type: 'string' },
  seed: { type: 'string' },
  metadata: { type: 'string', multiple: true },
  'idempotency-key': { type: 'string' },
  body: { type: 'string' },
  'n-epochs': { type: 'string' },
  'batch-size': { type: 'string' },
  'learning-rate-multiplier': { type: 'string' },
  'lora-r': { type: 'string' },
  'lora-alpha': { type: 'string' },
  'lora-dropout': { type: 'string' },
  rslora: { type: 'boolean' },
  'target-modules': { type: 'string' },
  'learning-rate': { type: 'string' },
  'max-steps': { type: 'string' },
  'max-seq-length': { type: 'string' },
  'lr-scheduler': { type: 'string' },
  'warmup-steps': { type: 'string' },
  'weight-decay': { type: 'string' },
  'gradient-accumulation-steps': { type: 'string' },
  'eval-every-steps': { type: 'string' },
  'gradient-checkpointing': { type: 'boolean' },
  watch: { type: 'boolean' },
  'dry-run': { type: 'boolean' },
  interval: { type: 'string' },
  timeout: { type: 'string' },
  quiet: { type: 'boolean' },
} as const;

/** Builds the POST body from `--body` and the flags (flags win). Exported for tests. */
export async function buildCreateBody(
  v: Partial<Record<keyof typeof CREATE_OPTIONS, string | string[] | boolean | undefined>>,
): Promise<Record<string, unknown>> {
  const str = (k: keyof typeof CREATE_OPTIONS) => v[k] as string | undefined;
  let body: Record<string, unknown> = {};
  if (str('body')) {
    let text: string;
    try {
      text = await readFile(str('body')!, 'utf8');
    } catch (error) {
      throw new UsageError(`cannot read --body ${str('body')}: ${(error as Error).message}`);
    }
    try {
      const parsed = JSON.parse(text) as unknown;
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed))
        throw new Error('not a JSON object');
      body = parsed as Record<string, unknown>;
    } catch (error) {
      throw new UsageError(
        `--body ${str('body')} is not a JSON object: ${(error as Error).message}`,
      );
    }
  }
  put(body, 'model', str('model'));
  put(body, 'training_file', str('training-file'));
  put(body, 'validation_file', str('validation-file'));
  put(body, 'suffix', str('suffix'));
  put(
    body,
    'seed',
    str('seed') === undefined ? undefined : parseNonNegative(str('seed'), '--seed', true),
  );
  put(body, 'metadata', parseMetadata(v.metadata as string[] | undefined));
  if (typeof body.model !== 'string' || body.model === '')
    throw new UsageError('--model is required');
  if (typeof body.training_file !== 'string' || body.training_file === '') {
    throw new UsageError('--training-file is required');
  }

  const hyper = { ...((body.hyperparameters as Record<string, unknown> | undefined) ?? {}) };
  put(hyper, 'n_epochs', parseNumberOrAuto(str('n-epochs'), '--n-epochs', true));
  put(hyper, 'batch_size', parseNumberOrAuto(str('batch-size'), '--batch-size', true));
  put(
    hyper,
    'learning_rate_multiplier',
    parseNumberOrAuto(str('learning-rate-multiplier'), '--learning-rate-multiplier', false),
  );
  if (Object.keys(hyper).length > 0) body.hyperparameters = hyper;

  const lora = { ...((body.lora as Record<string, unknown> | undefined) ?? {}) };
  put(
    lora,
    'r',
    str('lora-r') === undefined ? undefined : parsePositiveInt(str('lora-r')!, '--lora-r'),
  );
  put(
    lora,
    'alpha',
    str('lora-alpha') === undefined
      ? undefined
      : parsePositiveNumber(str('lora-alpha')!, '--lora-alpha'),
  );
  put(lora, 'dropout', parseNonNegative(str('lora-dropout'), '--lora-dropout', false));
  if (v.rslora === true) lora.use_rslora = true;
  const targets = str('target-modules');
  if (targets !== undefined) {
    lora.target_modules =
      targets === 'all-linear' ? 'all-linear' : parseList(targets, '--target-modules');
  }
  if (Object.keys(lora).length > 0) body.lora = lora;

  const training = { ...((body.training as Record<string, unknown> | undefined) ?? {}) };
  put(
    training,
    'learning_rate',
    str('learning-rate') === undefined
      ? undefined
      : parsePositiveNumber(str('learning-rate')!, '--learning-rate'),
  );
  put(
    training,
    'max_steps',
    str('max-steps') === undefined ? undefined : parsePositiveInt(str('max-steps')!, '--max-steps'),
  );
  put(
    training,
    'max_seq_length',
    str('max-seq-length') === undefined
      ? undefined
      : parsePositiveInt(str('max-seq-length')!, '--max-seq-length'),
  );
  const scheduler = str('lr-scheduler');
  if (scheduler !== undefined && scheduler !== 'linear' && scheduler !== 'cosine') {
    throw new UsageError(`--lr-scheduler must be linear or cosine (got "${scheduler}")`);
  }
  put(training, 'lr_scheduler', scheduler);
  put(training, 'warmup_steps', parseNonNegative(str('warmup-steps'), '--warmup-steps', true));
  put(training, 'weight_decay', parseNonNegative(str('weight-decay'), '--weight-decay', false));
  put(
    training,
    'gradient_accumulation_steps',
    str('gradient-accumulation-steps') === undefined
      ? undefined
      : parsePositiveInt(str('gradient-accumulation-steps')!, '--gradient-accumulation-steps'),
  );
  put(
    training,
    'eval_every_steps',
    str('eval-every-steps') === undefined
      ? undefined
      : parsePositiveInt(str('eval-every-steps')!, '--eval-every-steps'),
  );
  if (v['gradient-checkpointing'] === true) training.gradient_checkpointing = true;
  if (Object.keys(training).length > 0) body.training = training;
  return body;
}

interface WatchFlags {
  interval?: string;
  timeout?: string;
  quiet?: boolean;
}

/** Shared by `jobs watch` and `jobs create --watch`: follows the job and maps its end to an exit code. */
export async function followJob(
  client: RemoteClient,
  id: string,
  flags: WatchFlags,
  json: boolean,
  io: CliIo,
  sink: { write(text: string): void; isTTY?: boolean } = process.stderr,
): Promise<number> {
  const intervalMs =
    flags.interval === undefined ? 1000 : parsePositiveNumber(flags.interval, '--interval') * 1000;
  const timeoutMs =
    flags.timeout === undefined
      ? undefined
      : parsePositiveNumber(flags.timeout, '--timeout') * 1000;
  const printer = new ProgressPrinter(sink);
  const abort = new AbortController();
  const onSigint = () => abort.abort();
  process.once('SIGINT', onSigint);
  let job: FineTuningJob;
  try {
    job = await watchJob(client, id, {
      intervalMs,
      timeoutMs,
      signal: abort.signal,
      onUpdate: flags.quiet ? undefined : (state) => printer.update(state),
      onEvent: flags.quiet ? undefined : (event) => printer.event(event),
    });
  } catch (error) {
    printer.breakLine();
    if (error instanceof WatchTimeoutError) {
      io.err(`error: ${error.message}`);
      return EXIT_FAILURE;
    }
    if (abort.signal.aborted) {
      io.err(`interrupted; job ${id} keeps running (cancel it with "lorafleet jobs cancel ${id}")`);
      return 130;
    }
    return reportRemoteError(error, io);
  } finally {
    process.removeListener('SIGINT', onSigint);
  }
  printer.breakLine();
  if (json) io.out(JSON.stringify(job, null, 2));
  if (job.status === 'succeeded') {
    if (!json) {
      io.out(
        `job ${job.id} succeeded: ${job.fine_tuned_model ?? ''}` +
          `${job.adapter_id ? ` (adapter ${job.adapter_id}; download it with "lorafleet adapters download ${job.adapter_id} --out <dir>")` : ''}`,
      );
    }
    return EXIT_OK;
  }
  const reason = job.error
    ? `: ${job.error.message}${job.error.param ? ` (param: ${job.error.param})` : ''}`
    : '';
  io.err(`job ${job.id} ${job.status}${reason}`);
  return EXIT_FAILURE;
}

async function create(args: string[], io: CliIo): Promise<number> {
  return runRemote(args, io, CREATE_USAGE, CREATE_OPTIONS, async (ctx) => {
    expectPositionals(ctx.positionals, []);
    const v = ctx.values as Record<string, string | string[] | boolean | undefined>;
    const body = await buildCreateBody(v);
    const key = v['idempotency-key'] as string | undefined;
    if (v['dry-run'] === true) {
      if (v.watch === true || key !== undefined) {
        throw new UsageError(
          '--dry-run creates nothing: --watch and --idempotency-key do not apply',
        );
      }
      const estimate = await ctx.client.json<FineTuningJobEstimate>(
        'POST',
        '/v1/fine_tuning/jobs/estimate',
        { body },
      );
      print(io, ctx.json, estimate, () => estimateLines(estimate));
      return EXIT_OK;
    }
    const job = await ctx.client.json<FineTuningJob>('POST', '/v1/fine_tuning/jobs', {
      body,
      headers: key ? { 'idempotency-key': key } : {},
    });
    if (v.watch === true) {
      if (!ctx.json) io.out(`created ${job.id} (${job.status})`);
      return followJob(ctx.client, job.id, v, ctx.json, io);
    }
    print(io, ctx.json, job, () => jobLines(job));
    return EXIT_OK;
  });
}

async function list(args: string[], io: CliIo): Promise<number> {
  const options = {
    limit: { type: 'string' },
    after: { type: 'string' },
    status: { type: 'string' },
    metadata: { type: 'string', multiple: true },
  } as const;
  return runRemote(args, io, LIST_USAGE, options, async (ctx) => {
    expectPositionals(ctx.positionals, []);
    const v = ctx.values as Record<string, string | string[] | undefined>;
    const query: Record<string, string | undefined> = {
      limit:
        v.limit === undefined ? undefined : String(parsePositiveInt(v.limit as string, '--limit')),
      after: v.after as string | undefined,
      status: v.status as string | undefined,
    };
    for (const [k, value] of Object.entries(
      parseMetadata(v.metadata as string[] | undefined) ?? {},
    )) {
      query[`metadata[${k}]`] = value;
    }
    const page = await ctx.client.json<{ data: FineTuningJob[]; has_more: boolean }>(
      'GET',
      '/v1/fine_tuning/jobs',
      { query },
    );
    print(io, ctx.json, page, () => {
      if (page.data.length === 0) return 'No jobs.';
      const rows = table(
        ['ID', 'STATUS', 'MODEL', 'PROGRESS', 'CREATED', 'FINE-TUNED MODEL'],
        page.data.map((j) => [
          j.id,
          j.status,
          j.model,
          progressText(j),
          isoTime(j.created_at),
          j.fine_tuned_model,
        ]),
      );
      const last = page.data[page.data.length - 1].id;
      return page.has_more ? `${rows}\n(more: --after ${last})` : rows;
    });
    return EXIT_OK;
  });
}

async function get(args: string[], io: CliIo): Promise<number> {
  return runRemote(args, io, GET_USAGE, {}, async (ctx) => {
    const [id] = expectPositionals(ctx.positionals, ['job-id']);
    const job = await ctx.client.json<FineTuningJob>('GET', jobPath(id));
    print(io, ctx.json, job, () => jobLines(job));
    return EXIT_OK;
  });
}

async function watch(args: string[], io: CliIo): Promise<number> {
  const options = {
    interval: { type: 'string' },
    timeout: { type: 'string' },
    quiet: { type: 'boolean' },
  } as const;
  return runRemote(args, io, WATCH_USAGE, options, async (ctx) => {
    const [id] = expectPositionals(ctx.positionals, ['job-id']);
    return followJob(ctx.client, id, ctx.values, ctx.json, io);
  });
}

async function events(args: string[], io: CliIo): Promise<number> {
  const options = { limit: { type: 'string' }, after: { type: 'string' } } as const;
  return runRemote(args, io, EVENTS_USAGE, options, async (ctx) => {
    const [id] = expectPositionals(ctx.positionals, ['job-id']);
    const v = ctx.values as Record<string, string | undefined>;
    const page = await ctx.client.json<{ data: FineTuningJobEvent[]; has_more: boolean }>(
      'GET',
      `${jobPath(id)}/events`,
      {
        query: {
          limit: v.limit === undefined ? undefined : parsePositiveInt(v.limit, '--limit'),
          after: v.after,
        },
      },
    );
    print(io, ctx.json, page, () => {
      if (page.data.length === 0) return 'No events.';
      const lines = [...page.data].reverse().map(eventLine).join('\n');
      const oldest = page.data[page.data.length - 1].id;
      return page.has_more ? `(older: --after ${oldest})\n${lines}` : lines;
    });
    return EXIT_OK;
  });
}

function action(verb: 'cancel' | 'pause' | 'resume', usage: string) {
  return (args: string[], io: CliIo) =>
    runRemote(args, io, usage, {}, async (ctx) => {
      const [id] = expectPositionals(ctx.positionals, ['job-id']);
      const job = await ctx.client.json<FineTuningJob>('POST', `${jobPath(id)}/${verb}`);
      print(io, ctx.json, job, () => `${job.id}: ${job.status}`);
      return EXIT_OK;
    });
}

export function runJobs(args: string[], io: CliIo): Promise<number> {
  const cancelUsage = actionUsage(
    'cancel',
    'Cancels a queued, running or paused job; a running trainer is stopped.',
  );
  const pauseUsage = actionUsage(
    'pause',
    'Pauses a running job: the worker stops it at the next step and keeps its checkpoint.',
  );
  const resumeUsage = actionUsage(
    'resume',
    'Requeues a paused job; it continues from its last checkpoint.',
  );
  return dispatchGroup(
    'jobs',
    JOBS_USAGE,
    {
      create: withUsage(CREATE_USAGE, create),
      list: withUsage(LIST_USAGE, list),
      get: withUsage(GET_USAGE, get),
      watch: withUsage(WATCH_USAGE, watch),
      wait: withUsage(WATCH_USAGE, watch),
      events: withUsage(EVENTS_USAGE, events),
      cancel: withUsage(cancelUsage, action('cancel', cancelUsage)),
      pause: withUsage(pauseUsage, action('pause', pauseUsage)),
      resume: withUsage(resumeUsage, action('resume', resumeUsage)),
    },
    args,
    io,
  );
}
