/** `lorafleet adapters get|download`: trained PEFT adapters over REST (`/v1/adapters`). */
import type { AdapterObject, FineTuningJob } from '@lorafleet/contracts';
import { createHash } from 'node:crypto';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';

import { EXIT_OK, UsageError, type CliIo } from '../cli.io';
import type { RemoteClient } from '../remote/client';
import { isoTime, keyValues } from '../remote/format';
import {
  CONNECTION_HELP,
  CommandFailure,
  dispatchGroup,
  expectPositionals,
  runRemote,
  withUsage,
} from '../remote/remote-command';
import { TarError, readTarGz, safeRelativePath } from '../remote/tar';
import { isTerminal } from '../remote/watch';

export const ADAPTERS_USAGE = `Usage: lorafleet adapters <command> [options]

Commands:
  get <adapter-id|job-id>                  an adapter's metadata (base model, PEFT config, hash)
  download <adapter-id|job-id> --out <dir> the PEFT adapter directory (adapter_config.json,
                                           adapter_model.safetensors, lorafleet.json)

Run "lorafleet adapters <command> --help" for a command's options.`;

const GET_USAGE = `Usage: lorafleet adapters get <adapter-id|job-id> [options]

A job id (ftjob-…) stands for the adapter its job produced.

${CONNECTION_HELP}`;

const DOWNLOAD_USAGE = `Usage: lorafleet adapters download <adapter-id|job-id> --out <dir> [options]

Downloads the adapter as a Hugging Face PEFT directory that PeftModel.from_pretrained(base,
<dir>) loads: by default the tar.gz archive (extracted, with lorafleet.json lineage); with
--files the two PEFT files one by one. The weights' sha256 is checked against the API's.

Options:
  --out <dir>             output directory (created if missing)
  --files                 fetch adapter_config.json and adapter_model.safetensors separately
  --force                 overwrite files already in <dir>

${CONNECTION_HELP}`;

/** `ftjob-…` → the adapter its job produced; anything else is taken as an adapter id. */
async function resolveAdapterId(client: RemoteClient, id: string): Promise<string> {
  if (!id.startsWith('ftjob-')) return id;
  const job = await client.json<FineTuningJob>(
    'GET',
    `/v1/fine_tuning/jobs/${encodeURIComponent(id)}`,
  );
  if (!job.adapter_id) {
    throw new CommandFailure(
      `job ${id} is ${job.status} and has no adapter${isTerminal(job.status) ? '' : ' yet'}`,
    );
  }
  return job.adapter_id;
}

function adapterLines(adapter: AdapterObject): string {
  return keyValues([
    ['id', adapter.id],
    ['fine_tuned_model', adapter.fine_tuned_model],
    ['base_model', adapter.base_model],
    ['fine_tuning_job_id', adapter.fine_tuning_job_id],
    ['created_at', isoTime(adapter.created_at)],
    ['weights_sha256', adapter.weights_sha256],
    ['files', adapter.files.join(', ')],
    ['adapter_config', adapter.adapter_config],
  ]);
}

async function get(args: string[], io: CliIo): Promise<number> {
  return runRemote(args, io, GET_USAGE, {}, async (ctx) => {
    const [given] = expectPositionals(ctx.positionals, ['adapter-id|job-id']);
    const id = await resolveAdapterId(ctx.client, given);
    const adapter = await ctx.client.json<AdapterObject>(
      'GET',
      `/v1/adapters/${encodeURIComponent(id)}`,
    );
    io.out(ctx.json ? JSON.stringify(adapter, null, 2) : adapterLines(adapter));
    return EXIT_OK;
  });
}

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

/**
 * Downloads adapter `id` into `outDir` and returns the written paths. Exported for the demo
 * (tools/demo imports the built module).
 */
export async function downloadAdapter(
  client: RemoteClient,
  id: string,
  outDir: string,
  options: { files?: boolean; force?: boolean } = {},
): Promise<{ adapter: AdapterObject; written: string[] }> {
  const adapter = await client.json<AdapterObject>('GET', `/v1/adapters/${encodeURIComponent(id)}`);
  const entries: Array<{ name: string; content: Buffer }> = [];
  if (options.files) {
    for (const name of adapter.files) {
      entries.push({
        name,
        content: await client.bytes(
          `/v1/adapters/${encodeURIComponent(id)}/files/${encodeURIComponent(name)}`,
        ),
      });
    }
  } else {
    const archive = await client.bytes(`/v1/adapters/${encodeURIComponent(id)}/archive`);
    try {
      for (const file of readTarGz(archive)) {
        entries.push({ name: safeRelativePath(file.name), content: file.content });
      }
    } catch (error) {
      if (error instanceof TarError) throw new CommandFailure(`adapter archive: ${error.message}`);
      throw error;
    }
  }
  const weights = entries.find((e) => e.name === 'adapter_model.safetensors');
  if (!weights || !entries.some((e) => e.name === 'adapter_config.json')) {
    throw new CommandFailure(
      `the download of ${id} lacks adapter_config.json or adapter_model.safetensors`,
    );
  }
  const digest = sha256(weights.content);
  if (digest !== adapter.weights_sha256) {
    throw new CommandFailure(
      `adapter_model.safetensors has sha256 ${digest}, but the API says ${adapter.weights_sha256}`,
    );
  }
  const root = resolve(outDir);
  const existing = await stat(root).catch(() => undefined);
  if (existing && !existing.isDirectory())
    throw new UsageError(`--out ${outDir} exists and is not a directory`);
  if (!options.force) {
    for (const entry of entries) {
      if (await stat(join(root, entry.name)).catch(() => undefined)) {
        throw new UsageError(
          `${join(outDir, entry.name)} already exists (use --force to overwrite)`,
        );
      }
    }
  }
  const written: string[] = [];
  for (const entry of entries) {
    const target = join(root, entry.name);
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, entry.content);
    written.push(target);
  }
  return { adapter, written };
}

async function download(args: string[], io: CliIo): Promise<number> {
  const options = {
    out: { type: 'string' },
    files: { type: 'boolean' },
    force: { type: 'boolean' },
  } as const;
  return runRemote(args, io, DOWNLOAD_USAGE, options, async (ctx) => {
    const [given] = expectPositionals(ctx.positionals, ['adapter-id|job-id']);
    const v = ctx.values as { out?: string; files?: boolean; force?: boolean };
    if (!v.out) throw new UsageError('--out <dir> is required');
    const id = await resolveAdapterId(ctx.client, given);
    const { adapter, written } = await downloadAdapter(ctx.client, id, v.out, v);
    if (ctx.json) {
      io.out(JSON.stringify({ adapter, out: resolve(v.out), files: written }, null, 2));
    } else {
      io.out(
        `${adapter.id} (${adapter.fine_tuned_model}) → ${v.out}\n` +
          written.map((p) => `  ${p}`).join('\n') +
          `\nweights sha256 ${adapter.weights_sha256} verified`,
      );
    }
    return EXIT_OK;
  });
}

export function runAdapters(args: string[], io: CliIo): Promise<number> {
  return dispatchGroup(
    'adapters',
    ADAPTERS_USAGE,
    { get: withUsage(GET_USAGE, get), download: withUsage(DOWNLOAD_USAGE, download) },
    args,
    io,
  );
}
