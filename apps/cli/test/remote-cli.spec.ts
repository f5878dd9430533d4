/**
 * The remote commands as a user runs them: the built `lorafleet` binary as a process against
 * the real api (and one worker training the tiny shipped GPT-2), with Postgres and Redis.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { runCli, startRemoteFixture, until, type RemoteFixture } from './remote-harness';
import { freePort } from '@lorafleet/testing';

jest.setTimeout(120_000);

const GOOD = Array.from({ length: 6 }, (_, i) => ({
  prompt: `Count ${i}: `,
  completion: `${i} ${i + 1}`,
}));
const GOOD_JSONL = GOOD.map((row) => JSON.stringify(row)).join('\n') + '\n';

let fx: RemoteFixture;
let scratch: string;
let trainPath: string;
let longPath: string;
let badPath: string;

/** `lorafleet …` against the fixture's api, with its URL and key in the environment. */
const cli = (...args: string[]) => runCli(args, fx.env);
const json = <T = Record<string, unknown>>(text: string): T => JSON.parse(text) as T;

beforeAll(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'lorafleet-remote-cli-'));
  trainPath = path.join(scratch, 'train.jsonl');
  badPath = path.join(scratch, 'bad.jsonl');
  await writeFile(trainPath, GOOD_JSONL);
  longPath = path.join(scratch, 'long.jsonl');
  // 200 examples × 50 epochs at batch 1: far more steps than the test waits for.
  await writeFile(
    longPath,
    Array.from({ length: 200 }, (_, i) =>
      JSON.stringify({ prompt: `n${i}: `, completion: `${i}` }),
    ).join('\n') + '\n',
  );
  await writeFile(badPath, '{"prompt": "only a prompt"}\nnot json\n');
  fx = await startRemoteFixture({ worker: true });
});

afterAll(async () => {
  await fx?.close();
  await rm(scratch, { recursive: true, force: true });
});

describe('usage', () => {
  it.each([
    ['files'],
    ['jobs'],
    ['adapters'],
    ['models'],
    ['files', 'upload'],
    ['files', 'list'],
    ['files', 'get'],
    ['files', 'content'],
    ['files', 'delete'],
    ['jobs', 'create'],
    ['jobs', 'list'],
    ['jobs', 'get'],
    ['jobs', 'watch'],
    ['jobs', 'wait'],
    ['jobs', 'events'],
    ['jobs', 'cancel'],
    ['jobs', 'pause'],
    ['jobs', 'resume'],
    ['adapters', 'get'],
    ['adapters', 'download'],
    ['models', 'list'],
    ['models', 'get'],
    ['webhooks', 'create'],
  ])('%s %s --help exits 0 without an API key', async (...command) => {
    const result = await runCli([...command, '--help']);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^Usage: lorafleet /);
  });

  it('lists the remote commands in the top-level help', async () => {
    const result = await runCli(['--help']);
    expect(result.stdout).toMatch(/jobs <create\|list\|get\|watch/);
    expect(result.stdout).toMatch(/adapters <get\|download>/);
    expect(result.stdout).toMatch(/chat --model <name> \[prompt\]/);
    expect(result.stdout).toMatch(/webhooks <create\|list\|get\|delete\|deliveries\|redeliver>/);
  });

  it.each([
    [['files'], /missing subcommand/],
    [['jobs', 'explode'], /unknown subcommand "jobs explode"/],
    [['jobs', 'get'], /missing <job-id>/],
    [['jobs', 'get', 'a', 'b'], /extra "b"/],
    [['files', 'upload', '/no/such/file.jsonl'], /no such file: \/no\/such\/file.jsonl/],
    [['jobs', 'create', '--training-file', 'file-x'], /--model is required/],
    [['jobs', 'create', '--model', 'm'], /--training-file is required/],
    [
      ['jobs', 'create', '--model', 'm', '--training-file', 'f', '--n-epochs', 'x'],
      /--n-epochs must be a positive integer/,
    ],
    [
      ['jobs', 'create', '--model', 'm', '--training-file', 'f', '--lr-scheduler', 'step'],
      /--lr-scheduler must be linear or cosine/,
    ],
    [
      ['jobs', 'create', '--model', 'm', '--training-file', 'f', '--metadata', 'novalue'],
      /key=value/,
    ],
    [
      ['jobs', 'create', '--model', 'm', '--training-file', 'f', '--dry-run', '--watch'],
      /--dry-run creates nothing/,
    ],
    [['jobs', 'list', '--limit', '0'], /--limit must be a positive integer/],
    [['jobs', 'watch', 'ftjob-x', '--interval=-1'], /--interval must be a positive number/],
    [['adapters', 'download', 'adapter-x'], /--out <dir> is required/],
    [['models', 'list', '--bogus'], /Unknown option '--bogus'/],
    [['chat', 'hi'], /--model is required/],
    [
      ['chat', '--model', 'm', 'hi', '--max-tokens', 'x'],
      /--max-tokens must be a positive integer/,
    ],
    [['chat', '--model', 'm', 'hi', '--temperature', 'warm'], /--temperature must be a number/],
    [['chat', '--model', 'm', 'a', 'b'], /give the prompt as one argument/],
  ])('exits 2 on bad input %j', async (argv, message) => {
    const result = await cli(...argv);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(message);
    expect(result.stderr).toMatch(/Usage: lorafleet/);
  });

  it('exits 2 without an API key or with a bad URL, naming the fix', async () => {
    const noKey = await runCli(['models', 'list'], { LORAFLEET_API_URL: fx.baseUrl });
    expect(noKey.code).toBe(2);
    expect(noKey.stderr).toMatch(/no API key: pass --api-key or set LORAFLEET_API_KEY/);
    const badUrl = await runCli(['models', 'list', '--api-url', 'ftp://x', '--api-key', 'k']);
    expect(badUrl.code).toBe(2);
    expect(badUrl.stderr).toMatch(/--api-url must be an http\(s\) URL/);
  });

  it('exits 2 when the API cannot be reached', async () => {
    const port = await freePort(); // nothing listens there
    const result = await runCli([
      'jobs',
      'list',
      '--api-url',
      `http://127.0.0.1:${port}`,
      '--api-key',
      'k',
    ]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(
      /cannot reach the lorafleet API at http:\/\/127\.0\.0\.1:\d+: ECONNREFUSED/,
    );
  });

  it('takes the URL and key from flags as well as the environment (--base-url is an alias)', async () => {
    const result = await runCli([
      'models',
      'list',
      '--base-url',
      fx.baseUrl,
      '--api-key',
      fx.apiKey,
    ]);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/tiny-random-gpt2/);
  });

  it('prints the OpenAI error message for a wrong key (exit 1)', async () => {
    const result = await runCli(['models', 'list'], { ...fx.env, LORAFLEET_API_KEY: 'lf-wrong' });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^error: .+\[HTTP 401 invalid_api_key\]/m);
  });
});

describe('models', () => {
  it('lists the base models, as text and as JSON', async () => {
    const text = await cli('models', 'list');
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^ID\s+OWNED BY\s+CREATED/);
    expect(text.stdout).toMatch(/tiny-random-gpt2\s+lorafleet/);
    const list = await cli('models', 'list', '--json');
    expect(json<{ data: Array<{ id: string }> }>(list.stdout).data.map((m) => m.id)).toContain(
      'tiny-random-gpt2',
    );
  });

  it('gets one model and reports an unknown one with its param', async () => {
    expect((await cli('models', 'get', 'tiny-random-gpt2')).stdout).toMatch(
      /owned_by:\s+lorafleet/,
    );
    const missing = await cli('models', 'get', 'no-such-model');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/\(param: model\) \[HTTP 404 model_not_found\]/);
  });
});

describe('files', () => {
  let fileId: string;

  it('uploads a JSONL file and prints the file object', async () => {
    const result = await cli('files', 'upload', trainPath, '--json');
    expect(result.code).toBe(0);
    const file = json<{ id: string; status: string; filename: string; bytes: number }>(
      result.stdout,
    );
    expect(file).toMatchObject({
      status: 'processed',
      filename: 'train.jsonl',
      bytes: GOOD_JSONL.length,
    });
    fileId = file.id;
  });

  it('exits 1 when the upload fails validation, printing the line-numbered details', async () => {
    const result = await cli('files', 'upload', badPath);
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/status:\s+error/);
    expect(result.stderr).toMatch(/bad\.jsonl failed validation: [^]*line 2: invalid JSON/);
  });

  it('lists, gets and fetches the content', async () => {
    const list = await cli('files', 'list');
    expect(list.code).toBe(0);
    expect(list.stdout).toContain(fileId);
    const get = await cli('files', 'get', fileId);
    expect(get.stdout).toMatch(new RegExp(`id:\\s+${fileId}`));
    expect(get.stdout).toMatch(/status:\s+processed/);
    const content = await cli('files', 'content', fileId);
    expect(content.stdout).toBe(GOOD_JSONL);
    const out = path.join(scratch, 'copy.jsonl');
    expect((await cli('files', 'content', fileId, '--out', out)).code).toBe(0);
    expect(readFileSync(out, 'utf8')).toBe(GOOD_JSONL);
  });

  it('reports an unknown file with the OpenAI message and param (exit 1)', async () => {
    const result = await cli('files', 'get', 'file-nope');
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /^error: No such file: file-nope \(param: .+\) \[HTTP 404 not_found\]/m,
    );
  });

  it('deletes a file once', async () => {
    const upload = json<{ id: string }>((await cli('files', 'upload', trainPath, '--json')).stdout);
    const first = await cli('files', 'delete', upload.id);
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(`deleted ${upload.id}`);
    const second = await cli('files', 'delete', upload.id);
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/HTTP 404/);
  });
});

describe('jobs and adapters', () => {
  let cancelledWhileQueued: string;
  let trainingFile: string;
  let longFile: string;
  let succeededJob: string;

  beforeAll(async () => {
    trainingFile = json<{ id: string }>(
      (await cli('files', 'upload', trainPath, '--json')).stdout,
    ).id;
    longFile = json<{ id: string }>((await cli('files', 'upload', longPath, '--json')).stdout).id;
  });

  it('creates a job from flags, and rejects a bad one with the API message and param', async () => {
    const bad = await cli(
      'jobs',
      'create',
      '--model',
      'no-such-model',
      '--training-file',
      trainingFile,
    );
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/\(param: model\) \[HTTP 404 model_not_found\]/);

    const badFile = await cli(
      'jobs',
      'create',
      '--model',
      'tiny-random-gpt2',
      '--training-file',
      'file-nope',
    );
    expect(badFile.code).toBe(1);
    expect(badFile.stderr).toMatch(/No such file: file-nope \(param: training_file\)/);

    const created = await cli(
      'jobs',
      'create',
      '--model',
      'tiny-random-gpt2',
      '--training-file',
      trainingFile,
      '--suffix',
      'cli',
      '--seed',
      '3',
      '--n-epochs',
      '2',
      '--batch-size',
      '2',
      '--lora-r',
      '4',
      '--lora-alpha',
      '8',
      '--target-modules',
      'c_attn',
      '--max-steps',
      '3',
      '--max-seq-length',
      '32',
      '--learning-rate',
      '0.001',
      '--metadata',
      'team=cli',
      '--json',
    );
    expect(created.code).toBe(0);
    const job = json<Record<string, any>>(created.stdout);
    expect(job).toMatchObject({
      object: 'fine_tuning.job',
      model: 'tiny-random-gpt2',
      seed: 3,
      metadata: { team: 'cli' },
      hyperparameters: { n_epochs: 2, batch_size: 2 },
      lora: { r: 4, alpha: 8, target_modules: ['c_attn'] },
      training: { max_steps: 3, max_seq_length: 32, learning_rate: 0.001 },
    });
    succeededJob = job.id as string;
  });

  it('watches the job to success: progress bar with step and loss, exit 0', async () => {
    const result = await cli('jobs', 'watch', succeededJob, '--interval', '0.2');
    expect(result.code).toBe(0);
    expect(result.stderr).toMatch(/\[#+\] 100% step 3\/3 {2}loss \d+\.\d{4}/);
    expect(result.stderr).toMatch(/Fine-tuning job succeeded/);
    expect(result.stdout).toMatch(
      new RegExp(`job ${succeededJob} succeeded: ft:tiny-random-gpt2:`),
    );
    const again = await cli('jobs', 'wait', succeededJob, '--json', '--quiet');
    expect(again.code).toBe(0);
    expect(json(again.stdout)).toMatchObject({ id: succeededJob, status: 'succeeded' });
  });

  it('create --dry-run prints the estimate the finished job bears out, and exits 1 on a 4xx', async () => {
    const flags = [
      '--model',
      'tiny-random-gpt2',
      '--training-file',
      trainingFile,
      '--n-epochs',
      '2',
      '--batch-size',
      '2',
      '--lora-r',
      '4',
      '--target-modules',
      'c_attn',
      '--max-steps',
      '3',
      '--max-seq-length',
      '32',
    ];
    const dry = await cli('jobs', 'create', ...flags, '--dry-run', '--json');
    expect(dry.code).toBe(0);
    const estimate = json<Record<string, any>>(dry.stdout);
    const finished = json<Record<string, any>>(
      (await cli('jobs', 'get', succeededJob, '--json')).stdout,
    );
    // The same body trained for real: its steps and tokens are what the estimate said
    // (6 examples at batch 2 are 3 steps an epoch; max_steps 3 stops after exactly one).
    expect(estimate).toMatchObject({
      object: 'fine_tuning.job.estimate',
      total_steps: finished.progress.total_steps,
      trained_tokens: finished.trained_tokens,
      trained_tokens_exact: true,
      epochs: 1,
    });
    // The worker recorded the finished job's speed: its backend has a wall time.
    expect(estimate.backends).toEqual([
      expect.objectContaining({
        backend: finished.backend,
        workers: 1,
        fits_memory: true,
        tokens_per_second: expect.any(Number),
        estimated_seconds: expect.any(Number),
        reason: null,
      }),
    ]);
    expect(estimate.backends[0].tokens_per_second).toBeGreaterThan(0);
    expect(estimate.backends[0].samples).toBeGreaterThanOrEqual(1);

    const text = await cli('jobs', 'create', ...flags, '--dry-run');
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`trained tokens:\\s+${finished.trained_tokens} \\(`));
    expect(text.stdout).toMatch(/steps:\s+3 \(3 per epoch, 1 epochs\)/);
    expect(text.stdout).toMatch(/peak memory:\s+~\d+ MiB/);
    expect(text.stdout).toMatch(/quota:\s+fits/);
    expect(text.stdout).toMatch(
      new RegExp(`^${finished.backend}\\s+1\\s+\\d+ MiB\\s+yes\\s+\\d+\\s+\\d+:\\d\\d`, 'm'),
    );
    expect(text.stdout).toMatch(/Nothing was created \(dry run\)\./);

    const bad = await cli('jobs', 'create', ...flags, '--lora-r', '100000', '--dry-run');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/\(param: lora\.r\) \[HTTP 400/);
  });

  it('gets, lists and prints the events of the job', async () => {
    const get = await cli('jobs', 'get', succeededJob);
    expect(get.stdout).toMatch(/status:\s+succeeded/);
    // A succeeded job always shows its whole run (step = total_steps).
    expect(get.stdout).toMatch(/progress:\s+3\/3 \(100%\)/);
    const list = await cli('jobs', 'list', '--status', 'succeeded', '--metadata', 'team=cli');
    expect(list.stdout).toMatch(
      new RegExp(`${succeededJob}\\s+succeeded\\s+tiny-random-gpt2\\s+3/3`),
    );
    const got = await cli('jobs', 'get', succeededJob, '--json');
    expect(json<{ progress: Record<string, unknown> }>(got.stdout).progress).toMatchObject({
      step: 3,
      total_steps: 3,
      percent: 100,
    });
    const none = await cli('jobs', 'list', '--metadata', 'team=nobody');
    expect(none.stdout.trim()).toBe('No jobs.');
    const events = await cli('jobs', 'events', succeededJob, '--limit', '100');
    const lines = events.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/Validating training file/); // oldest first
    expect(lines[lines.length - 1]).toMatch(/Fine-tuning job succeeded/);
    const page = await cli('jobs', 'events', succeededJob, '--limit', '2', '--json');
    expect(json<{ data: unknown[]; has_more: boolean }>(page.stdout)).toMatchObject({
      has_more: true,
    });
    expect((await cli('jobs', 'events', succeededJob, '--limit', '2')).stdout).toMatch(
      /^\(older: --after ftevent-\d+\)/,
    );
    const bad = await cli('jobs', 'list', '--status', 'exploded');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/Unknown status filter: exploded \(param: status\)/);
  });

  it('gets and downloads the adapter (archive or the two files), verifying its hash', async () => {
    const info = await cli('adapters', 'get', succeededJob, '--json');
    expect(info.code).toBe(0);
    const adapter = json<{ id: string; weights_sha256: string; base_model: string }>(info.stdout);
    expect(adapter.base_model).toBe('tiny-random-gpt2');

    const out = path.join(scratch, 'adapter');
    const download = await cli('adapters', 'download', adapter.id, '--out', out);
    expect(download.code).toBe(0);
    expect(download.stdout).toMatch(/weights sha256 [0-9a-f]{64} verified/);
    const weights = readFileSync(path.join(out, 'adapter_model.safetensors'));
    expect(createHash('sha256').update(weights).digest('hex')).toBe(adapter.weights_sha256);
    const config = json<Record<string, unknown>>(
      readFileSync(path.join(out, 'adapter_config.json'), 'utf8'),
    );
    expect(config).toMatchObject({ peft_type: 'LORA', r: 4, lora_alpha: 8 });
    expect(json(readFileSync(path.join(out, 'lorafleet.json'), 'utf8'))).toMatchObject({
      adapter_id: adapter.id,
      fine_tuning_job_id: succeededJob,
    });

    const again = await cli('adapters', 'download', adapter.id, '--out', out);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/already exists \(use --force to overwrite\)/);
    expect((await cli('adapters', 'download', adapter.id, '--out', out, '--force')).code).toBe(0);

    const filesOut = path.join(scratch, 'adapter-files');
    const byFiles = await cli(
      'adapters',
      'download',
      succeededJob,
      '--out',
      filesOut,
      '--files',
      '--json',
    );
    expect(byFiles.code).toBe(0);
    expect(
      json<{ files: string[] }>(byFiles.stdout)
        .files.map((f) => path.basename(f))
        .sort(),
    ).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    expect(existsSync(path.join(filesOut, 'lorafleet.json'))).toBe(false);
    expect(readFileSync(path.join(filesOut, 'adapter_model.safetensors'))).toEqual(weights);

    const models = await cli('models', 'list');
    expect(models.stdout).toMatch(/ft:tiny-random-gpt2:\S+:cli:/);

    const missing = await cli('adapters', 'get', 'adapter-nope');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(
      /No such adapter: adapter-nope \(param: adapter_id\) \[HTTP 404 not_found\]/,
    );
  });

  it('pauses, resumes and cancels a running job; watch exits 1 on cancelled; bad transitions exit 1', async () => {
    const body = path.join(scratch, 'long-job.json');
    await writeFile(
      body,
      JSON.stringify({
        model: 'tiny-random-gpt2',
        hyperparameters: { n_epochs: 50, batch_size: 1 },
        lora: { r: 2, alpha: 4 },
        training: { max_seq_length: 32 },
      }),
    );
    // --body gives the bulk, flags add the file; the worker has one slot, so B waits behind A.
    const a = json<{ id: string }>(
      (await cli('jobs', 'create', '--body', body, '--training-file', longFile, '--json')).stdout,
    ).id;
    const b = json<{ id: string }>(
      (await cli('jobs', 'create', '--body', body, '--training-file', trainingFile, '--json'))
        .stdout,
    ).id;
    const status = async (id: string) =>
      json<{ status: string; progress: { step: number } }>(
        (await cli('jobs', 'get', id, '--json')).stdout,
      );
    await until(
      'job A to run',
      async () => ((await status(a)).status === 'running' ? true : undefined),
      60_000,
    );

    const cancelB = await cli('jobs', 'cancel', b);
    cancelledWhileQueued = b;
    expect(cancelB.code).toBe(0);
    expect(cancelB.stdout.trim()).toBe(`${b}: cancelled`);
    const watchB = await cli('jobs', 'watch', b);
    expect(watchB.code).toBe(1);
    expect(watchB.stderr).toMatch(new RegExp(`job ${b} cancelled`));
    const cancelAgain = await cli('jobs', 'cancel', b);
    expect(cancelAgain.code).toBe(1);
    expect(cancelAgain.stderr).toMatch(
      /already cancelled and cannot be cancelled \[HTTP 409 invalid_state\]/,
    );

    const timeout = await cli('jobs', 'watch', a, '--timeout', '1', '--interval', '0.2');
    expect(timeout.code).toBe(1);
    expect(timeout.stderr).toMatch(new RegExp(`job ${a} is still (running|queued) after 1 s`));

    expect((await cli('jobs', 'pause', a)).code).toBe(0);
    await until(
      'job A to pause',
      async () => ((await status(a)).status === 'paused' ? true : undefined),
      60_000,
    );
    const resumeB = await cli('jobs', 'resume', b);
    expect(resumeB.code).toBe(1);
    expect(resumeB.stderr).toMatch(/Only paused jobs can be resumed/);
    const resumed = await cli('jobs', 'resume', a, '--json');
    expect(resumed.code).toBe(0);
    expect(['queued', 'running']).toContain(json<{ status: string }>(resumed.stdout).status);

    expect((await cli('jobs', 'cancel', a)).code).toBe(0);
    const watchA = await cli('jobs', 'watch', a, '--quiet');
    expect(watchA.code).toBe(1);
    expect(watchA.stderr).toMatch(`job ${a} cancelled`);
    const pauseCancelled = await cli('jobs', 'pause', a);
    expect(pauseCancelled.code).toBe(1);
    expect(pauseCancelled.stderr).toMatch(/Only running jobs can be paused/);
  });

  it('reports a job that does not exist (exit 1) and a job without an adapter', async () => {
    const watch = await cli('jobs', 'watch', 'ftjob-nope');
    expect(watch.code).toBe(1);
    expect(watch.stderr).toMatch(
      /No such fine-tuning job: ftjob-nope \(param: fine_tuning_job_id\)/,
    );
    const download = await cli(
      'adapters',
      'download',
      cancelledWhileQueued,
      '--out',
      path.join(scratch, 'none'),
    );
    expect(download.code).toBe(1);
    expect(download.stderr).toMatch(`job ${cancelledWhileQueued} is cancelled and has no adapter`);
    expect(existsSync(path.join(scratch, 'none'))).toBe(false);
  });
});

describe('webhooks', () => {
  it('creates, lists, shows, logs, redelivers and deletes an endpoint', async () => {
    const received: { headers: IncomingHttpHeaders; body: string }[] = [];
    const receiver = createServer((request, response) => {
      let body = '';
      request.on('data', (chunk: Buffer) => (body += chunk.toString()));
      request.on('end', () => {
        received.push({ headers: request.headers, body });
        response.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;
    // The job that emits the event is made over REST directly: not what is tested here.
    const api = async (method: string, route: string, body?: unknown) => {
      const response = await fetch(`${fx.baseUrl}${route}`, {
        method,
        headers: {
          authorization: `Bearer ${fx.apiKey}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return (await response.json()) as Record<string, any>;
    };
    try {
      const bad = await cli('webhooks', 'create', '--url', 'ftp://example.com/x');
      expect(bad.code).toBe(1);
      expect(bad.stderr).toMatch(/\(param: url\) \[HTTP 400 invalid_request\]/);

      // Without --event: all three events.
      const created = await cli('webhooks', 'create', '--url', url);
      expect(created.code).toBe(0);
      expect(created.stdout).toMatch(
        /events: +fine_tuning.job.succeeded, fine_tuning.job.failed, fine_tuning.job.cancelled/,
      );
      expect(created.stdout).toMatch(/secret: +whsec_[A-Za-z0-9+/]{43}=/);
      expect(created.stderr).toMatch(/shown only now/);
      const endpointId = /id: +(we_\w+)/.exec(created.stdout)![1];

      const listed = await cli('webhooks', 'list');
      expect(listed.code).toBe(0);
      expect(listed.stdout).toMatch(new RegExp(`^${endpointId} .* ${url}$`, 'm'));
      const shown = await cli('webhooks', 'get', endpointId, '--json');
      expect(json(shown.stdout)).toMatchObject({ id: endpointId, url });
      expect(shown.stdout).not.toContain('whsec_');

      const form = new FormData();
      form.append('purpose', 'fine-tune');
      form.append('file', new Blob([GOOD_JSONL]), 'train.jsonl');
      const file = (await fetch(`${fx.baseUrl}/v1/files`, {
        method: 'POST',
        headers: { authorization: `Bearer ${fx.apiKey}` },
        body: form,
      }).then((r) => r.json())) as { id: string };
      // A two-step job the fixture's worker trains: its completion, in the worker, emits the
      // event in the same transaction.
      const job = await api('POST', '/v1/fine_tuning/jobs', {
        model: 'tiny-random-gpt2',
        training_file: file.id,
        hyperparameters: { n_epochs: 1, batch_size: 1 },
        training: { max_steps: 2 },
      });
      expect(job.status).toBe('queued');
      const delivery = await until(
        'the success event is delivered',
        async () => {
          const log = await api('GET', `/v1/webhook_endpoints/${endpointId}/deliveries`);
          const first = log.data?.[0] as
            { id: string; status: string; event_id: string } | undefined;
          return first?.status === 'delivered' ? first : undefined;
        },
        90_000,
      );
      expect(received).toHaveLength(1);
      expect(received[0].headers['webhook-id']).toBe(delivery.event_id);
      expect(JSON.parse(received[0].body)).toMatchObject({
        type: 'fine_tuning.job.succeeded',
        data: { id: job.id },
      });
      const log = await cli('webhooks', 'deliveries', endpointId);
      expect(log.stdout).toMatch(
        new RegExp(
          `^${delivery.id} +fine_tuning.job.succeeded +${job.id as string} +delivered +1 +204 `,
          'm',
        ),
      );

      const again = await cli('webhooks', 'redeliver', endpointId, delivery.id);
      expect(again.code).toBe(0);
      expect(again.stdout).toMatch(`event_id:        ${delivery.event_id}`);
      await until('the redelivery arrives', () =>
        Promise.resolve(received.length === 2 ? true : undefined),
      );
      expect(received[1].headers['webhook-id']).toBe(delivery.event_id);

      const deleted = await cli('webhooks', 'delete', endpointId);
      expect(deleted).toMatchObject({ code: 0, stdout: `deleted ${endpointId}\n` });
      expect((await api('GET', `/v1/webhook_endpoints/${endpointId}`)).error).toMatchObject({
        code: 'not_found',
      });
    } finally {
      receiver.closeAllConnections();
      await new Promise((resolve) => receiver.close(resolve));
    }
  });
});
