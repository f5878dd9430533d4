/** The remote CLI's pure parts: tar reading, formatting, progress, watch polling, job bodies. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';

import type { FineTuningJob, FineTuningJobEstimate } from '@lorafleet/contracts';

import { buildCreateBody } from '../src/commands/remote-jobs.command';
import { ApiConnectionError, ApiRequestError, RemoteClient } from '../src/remote/client';
import { bar, duration, estimateLines, jobLines, progressLine, table } from '../src/remote/format';
import { TarError, readTarGz, safeRelativePath } from '../src/remote/tar';
import { ProgressPrinter, WatchTimeoutError, watchJob } from '../src/remote/watch';

let scratch: string;
beforeAll(() => {
  scratch = mkdtempSync(path.join(tmpdir(), 'lorafleet-remote-units-'));
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('readTarGz', () => {
  it('reads an archive written by GNU tar, under its top directory', () => {
    const dir = path.join(scratch, 'adapter-abc');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'adapter_config.json'), '{"r": 8}\n');
    const weights = Buffer.alloc(1300, 7); // spans three 512-byte blocks
    writeFileSync(path.join(dir, 'adapter_model.safetensors'), weights);
    const archive = path.join(scratch, 'a.tar.gz');
    execFileSync('tar', ['--format=ustar', '-czf', archive, '-C', scratch, 'adapter-abc']);
    const files = readTarGz(readFileSync(archive));
    const byName = new Map(files.map((f) => [safeRelativePath(f.name), f.content]));
    expect(byName.get('adapter_config.json')?.toString()).toBe('{"r": 8}\n');
    expect(byName.get('adapter_model.safetensors')).toEqual(weights);
  });

  it('rejects what it does not write: bad gzip, bad checksums, links, escaping paths', () => {
    expect(() => readTarGz(Buffer.from('not gzip'))).toThrow(TarError);
    const header = Buffer.alloc(512, 0);
    header.write('x', 0);
    header.write('00000000000\0', 124);
    header.write('0000000\0', 148); // wrong checksum
    expect(() => readTarGz(gzipSync(Buffer.concat([header, Buffer.alloc(1024)])))).toThrow(
      /checksum/,
    );
    expect(() => safeRelativePath('../etc/passwd')).toThrow(/unsafe path/);
    expect(() => safeRelativePath('/etc/passwd')).toThrow(/unsafe path/);
    expect(() => safeRelativePath('adapter-x/../../x')).toThrow(/unsafe path/);
    expect(safeRelativePath('adapter-x/sub/file.json')).toBe('sub/file.json');
    expect(safeRelativePath('file.json')).toBe('file.json');

    const dir = path.join(scratch, 'links');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'target'), 'x');
    execFileSync('ln', ['-s', 'target', path.join(dir, 'link')]);
    const archive = path.join(scratch, 'links.tar.gz');
    execFileSync('tar', ['--format=ustar', '-czf', archive, '-C', scratch, 'links']);
    expect(() => readTarGz(readFileSync(archive))).toThrow(/unsupported tar entry type "2"/);
  });
});

function job(overrides: Partial<FineTuningJob> = {}): FineTuningJob {
  return {
    id: 'ftjob-1',
    object: 'fine_tuning.job',
    model: 'm',
    status: 'running',
    created_at: 1_700_000_000,
    finished_at: null,
    fine_tuned_model: null,
    suffix: null,
    organization_id: 'org-1',
    training_file: 'file-1',
    validation_file: null,
    hyperparameters: { n_epochs: 1, batch_size: 1, learning_rate_multiplier: 1 },
    method: {
      type: 'supervised',
      supervised: { hyperparameters: { n_epochs: 1, batch_size: 1, learning_rate_multiplier: 1 } },
    },
    trained_tokens: null,
    error: null,
    seed: 0,
    metadata: null,
    estimated_finish: 1_700_000_075,
    result_files: [],
    progress: { step: 45, total_steps: 100, epoch: 0.45, percent: 45 },
    lora: { r: 8, alpha: 16, dropout: 0, use_rslora: false },
    training: {
      learning_rate: 2e-4,
      max_seq_length: 256,
      max_grad_norm: 1,
      lr_scheduler: 'linear',
      warmup_steps: 0,
      weight_decay: 0,
      gradient_accumulation_steps: 1,
      gradient_checkpointing: false,
    },
    worker: null,
    backend: null,
    adapter_id: null,
    base_model_hash: null,
    usage: null,
    ...overrides,
  };
}

describe('formatting', () => {
  it("shows a succeeded job's usage, and none before", () => {
    const done = job({ usage: { peak_memory_mb: 812, tokens_per_second: 95.4 } });
    expect(jobLines(done)).toMatch(/usage: +peak memory 812 MiB, 95 tokens\/s/);
    expect(jobLines(job())).not.toMatch(/peak memory/);
  });

  it('renders bars, durations, tables and the progress line', () => {
    expect(bar(0.5, 10)).toBe('[#####.....]  50%');
    expect(bar(2, 4)).toBe('[####] 100%');
    expect(duration(75)).toBe('1:15');
    expect(duration(3725)).toBe('1:02:05');
    expect(
      table(
        ['A', 'BB'],
        [
          ['x', null],
          ['long', 2],
        ],
      ),
    ).toBe('A     BB\nx     -\nlong  2');
    expect(
      progressLine({
        job: job(),
        loss: 1.23456,
        validLoss: null,
        elapsedSeconds: 62,
        nowSeconds: 1_700_000_000,
      }),
    ).toBe(
      '[###########.............]  45% step 45/100  loss 1.2346  eta 1:15  elapsed 1:02  running',
    );
  });

  it('redraws one line on a TTY and prints throttled lines elsewhere', () => {
    const tty: string[] = [];
    const onTty = new ProgressPrinter({ write: (t) => tty.push(t), isTTY: true });
    const state = {
      job: job(),
      loss: 1,
      validLoss: null,
      elapsedSeconds: 1,
      nowSeconds: 1_700_000_000,
    };
    onTty.update(state);
    onTty.update(state); // unchanged: nothing written
    onTty.update({
      ...state,
      job: job({ progress: { step: 46, total_steps: 100, epoch: null, percent: 46 } }),
    });
    expect(tty).toHaveLength(2);
    expect(tty.every((t) => t.startsWith('\r'))).toBe(true);
    onTty.breakLine();
    expect(tty[tty.length - 1]).toBe('\n');

    const log: string[] = [];
    const plain = new ProgressPrinter({ write: (t) => log.push(t), isTTY: false }, 60_000);
    plain.update(state);
    plain.update({
      ...state,
      job: job({ progress: { step: 46, total_steps: 100, epoch: null, percent: 46 } }),
    });
    plain.update({ ...state, job: job({ status: 'succeeded' }) }); // status changes always print
    expect(log).toHaveLength(2);
    expect(log[1]).toMatch(/succeeded\n$/);
  });
});

describe('estimateLines', () => {
  const estimate: FineTuningJobEstimate = {
    object: 'fine_tuning.job.estimate',
    model: 'tiny-random-gpt2',
    training_file: 'file-1',
    method: 'supervised',
    hyperparameters: { n_epochs: 2, batch_size: 2, learning_rate_multiplier: 1 },
    lora: { r: 8, alpha: 16, dropout: 0, use_rslora: false },
    training: {
      learning_rate: 2e-4,
      max_seq_length: 32,
      lr_scheduler: 'linear',
      warmup_steps: 0,
      weight_decay: 0,
      gradient_accumulation_steps: 1,
      max_grad_norm: 1,
      gradient_checkpointing: false,
    },
    examples: 4,
    trained_tokens_per_epoch: 120,
    trained_tokens: 240,
    trained_tokens_exact: true,
    target_tokens_per_epoch: 30,
    target_tokens: 60,
    steps_per_epoch: 2,
    total_steps: 4,
    epochs: 2,
    truncated_examples: 1,
    examples_without_targets: 0,
    estimated_peak_memory_mb: 400,
    memory_parts_mb: {
      frozen_weights: 1,
      adapter_and_optimizer: 1,
      activations: 1,
      head: 1,
      runtime: 396,
    },
    backends: [],
    quota: {
      fits: true,
      rule: 'max_active_jobs_per_tenant',
      limit: 2,
      active_jobs: 0,
      message: null,
    },
  };

  it('counts a DPO estimate in pairs, its tokens over both sides of each pair', () => {
    const sft = estimateLines(estimate);
    expect(sft).toMatch(/^examples: +4$/m);
    expect(sft).toMatch(/^truncated: +1 examples at max_seq_length 32$/m);
    const dpo = estimateLines({ ...estimate, method: 'dpo' });
    expect(dpo).toMatch(/^pairs: +4$/m);
    expect(dpo).toMatch(/^trained tokens: +240 \(120 per epoch, both sides of each pair; 30 of/m);
    expect(dpo).toMatch(/^truncated: +1 pairs at max_seq_length 32$/m);
    expect(dpo).not.toMatch(/examples/);
  });
});

describe('buildCreateBody', () => {
  it('starts from --body and lets the flags override and extend it', async () => {
    const file = path.join(scratch, 'body.json');
    writeFileSync(
      file,
      JSON.stringify({
        model: 'base',
        training_file: 'file-a',
        hyperparameters: { n_epochs: 3 },
        lora: { r: 16 },
        training: { max_steps: 9 },
      }),
    );
    const body = await buildCreateBody({
      body: file,
      'training-file': 'file-b',
      'batch-size': 'auto',
      'lora-alpha': '32',
      'target-modules': 'q_proj, v_proj',
      'max-steps': '5',
      metadata: ['a=1', 'b=x=y'],
      rslora: true,
      'gradient-checkpointing': true,
    });
    expect(body).toEqual({
      model: 'base',
      training_file: 'file-b',
      metadata: { a: '1', b: 'x=y' },
      hyperparameters: { n_epochs: 3, batch_size: 'auto' },
      lora: { r: 16, alpha: 32, use_rslora: true, target_modules: ['q_proj', 'v_proj'] },
      training: { max_steps: 5, gradient_checkpointing: true },
    });
  });

  it('explains a bad --body', async () => {
    const file = path.join(scratch, 'list.json');
    writeFileSync(file, '[1]');
    await expect(buildCreateBody({ body: file })).rejects.toThrow(/is not a JSON object/);
    await expect(buildCreateBody({ body: path.join(scratch, 'nope.json') })).rejects.toThrow(
      /cannot read --body/,
    );
  });
});

/** A scripted fetch: each call takes the next answer (a Response or an Error to throw). */
function scriptedFetch(answers: Array<() => Response | Error>) {
  const calls: Array<{ url: string; headers: Record<string, string> }> = [];
  const impl = ((url: string, init: RequestInit) => {
    calls.push({ url, headers: (init.headers ?? {}) as Record<string, string> });
    const answer = answers.shift();
    if (!answer) return Promise.reject(new Error(`unexpected request ${url}`));
    const value = answer();
    return value instanceof Error ? Promise.reject(value) : Promise.resolve(value);
  }) as unknown as typeof fetch;
  return { impl, calls };
}

const jsonResponse = (body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), {
    status: 200,
    headers: { 'content-type': 'application/json', ...headers },
  });
const events = (data: unknown[]) => jsonResponse({ object: 'list', data, has_more: false });

describe('watchJob', () => {
  it('sends If-None-Match, reads events only when the job changed, and returns the terminal job', async () => {
    const { impl, calls } = scriptedFetch([
      () =>
        jsonResponse(job({ progress: { step: 1, total_steps: 2, epoch: null, percent: 50 } }), {
          etag: 'W/"1"',
        }),
      () =>
        events([
          {
            id: 'ftevent-2',
            type: 'metrics',
            message: 'm',
            level: 'info',
            created_at: 1,
            object: 'fine_tuning.job.event',
            data: { train_loss: 0.5 },
          },
          {
            id: 'ftevent-1',
            type: 'status',
            message: 'started',
            level: 'info',
            created_at: 1,
            object: 'fine_tuning.job.event',
            data: null,
          },
        ]),
      () => new Response(null, { status: 304 }),
      () => jsonResponse(job({ status: 'succeeded' }), { etag: 'W/"2"' }),
      () =>
        events([
          {
            id: 'ftevent-3',
            type: 'status',
            message: 'done',
            level: 'info',
            created_at: 2,
            object: 'fine_tuning.job.event',
            data: null,
          },
          {
            id: 'ftevent-2',
            type: 'metrics',
            message: 'm',
            level: 'info',
            created_at: 1,
            object: 'fine_tuning.job.event',
            data: { train_loss: 0.5 },
          },
        ]),
    ]);
    const client = new RemoteClient({ baseUrl: 'http://api', apiKey: 'k', fetch: impl });
    const seen: string[] = [];
    const losses: Array<number | null> = [];
    const final = await watchJob(client, 'ftjob-1', {
      intervalMs: 1,
      onEvent: (e) => seen.push(e.message),
      onUpdate: (s) => losses.push(s.loss),
    });
    expect(final.status).toBe('succeeded');
    expect(seen).toEqual(['started', 'done']); // each event once, oldest first, no metrics
    expect(losses).toEqual([0.5, 0.5, 0.5]);
    expect(calls[2].headers['if-none-match']).toBe('W/"1"');
    expect(calls[0].headers.authorization).toBe('Bearer k');
  });

  it('rides out short connection failures, then gives up with an ApiConnectionError', async () => {
    const refused = () =>
      Object.assign(new TypeError('fetch failed'), {
        cause: Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }),
      });
    const { impl } = scriptedFetch(Array.from({ length: 50 }, () => refused));
    const client = new RemoteClient({ baseUrl: 'http://api', fetch: impl });
    await expect(
      watchJob(client, 'ftjob-1', { intervalMs: 5, connectionGraceMs: 30 }),
    ).rejects.toThrow(/cannot reach the lorafleet API at http:\/\/api: ECONNREFUSED/);
    await expect(
      watchJob(
        new RemoteClient({ baseUrl: 'http://api', fetch: scriptedFetch([refused]).impl }),
        'x',
        {
          connectionGraceMs: 0,
        },
      ),
    ).rejects.toBeInstanceOf(ApiConnectionError);
  });

  it('times out on a job that does not end, and surfaces API errors at once', async () => {
    const { impl } = scriptedFetch([
      () => jsonResponse(job(), { etag: 'W/"1"' }),
      () => events([]),
      ...Array.from({ length: 100 }, () => () => new Response(null, { status: 304 })),
    ]);
    const client = new RemoteClient({ baseUrl: 'http://api', fetch: impl });
    await expect(
      watchJob(client, 'ftjob-1', { intervalMs: 5, timeoutMs: 20 }),
    ).rejects.toBeInstanceOf(WatchTimeoutError);
    const notFound = scriptedFetch([
      () =>
        new Response(
          JSON.stringify({
            error: {
              message: 'No such fine-tuning job: x',
              type: 'invalid_request_error',
              param: 'fine_tuning_job_id',
              code: 'not_found',
            },
          }),
          { status: 404 },
        ),
    ]);
    const error = await watchJob(
      new RemoteClient({ baseUrl: 'http://api', fetch: notFound.impl }),
      'x',
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiRequestError);
    expect((error as ApiRequestError).describe()).toBe(
      'No such fine-tuning job: x (param: fine_tuning_job_id) [HTTP 404 not_found]',
    );
  });

  it('describes a non-lorafleet answer', async () => {
    const { impl } = scriptedFetch([
      () => new Response('<html>bad gateway</html>', { status: 502 }),
    ]);
    const error = await new RemoteClient({ baseUrl: 'http://api', fetch: impl })
      .json('GET', '/v1/models')
      .catch((e: unknown) => e as ApiRequestError);
    expect((error as ApiRequestError).describe()).toBe(
      'GET /v1/models answered HTTP 502: <html>bad gateway</html> [HTTP 502]',
    );
  });
});
