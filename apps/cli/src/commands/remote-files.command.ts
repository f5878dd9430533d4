/** `lorafleet files upload|list|get|content|delete`: training files over REST (`/v1/files`). */
import type { FileObject } from '@lorafleet/contracts';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { basename } from 'node:path';

import { EXIT_FAILURE, EXIT_OK, UsageError, type CliIo } from '../cli.io';
import { isoTime, keyValues, table } from '../remote/format';
import {
  CONNECTION_HELP,
  dispatchGroup,
  expectPositionals,
  runRemote,
  withUsage,
} from '../remote/remote-command';

export const FILES_USAGE = `Usage: lorafleet files <command> [options]

Commands:
  upload <path.jsonl>     upload a JSONL training or validation file (validated on arrival)
  list                    this tenant's files
  get <file-id>           one file's metadata, including validation errors
  content <file-id>       the file's bytes (to stdout, or --out <path>)
  delete <file-id>        delete a file

Run "lorafleet files <command> --help" for a command's options.`;

const UPLOAD_USAGE = `Usage: lorafleet files upload <path.jsonl> [--purpose fine-tune] [options]

Uploads the file as multipart/form-data. The API validates every line and answers with the
file object; a file that fails validation is stored with status "error" and its line-numbered
details, and this command then exits 1.

Options:
  --purpose <p>           file purpose (default fine-tune)

${CONNECTION_HELP}`;

const LIST_USAGE = `Usage: lorafleet files list [options]

${CONNECTION_HELP}`;

const GET_USAGE = `Usage: lorafleet files get <file-id> [options]

${CONNECTION_HELP}`;

const CONTENT_USAGE = `Usage: lorafleet files content <file-id> [--out <path>] [options]

Options:
  --out <path>            write the bytes to <path> instead of stdout

${CONNECTION_HELP}`;

const DELETE_USAGE = `Usage: lorafleet files delete <file-id> [options]

${CONNECTION_HELP}`;

function fileLines(file: FileObject): string {
  return keyValues([
    ['id', file.id],
    ['filename', file.filename],
    ['purpose', file.purpose],
    ['bytes', file.bytes],
    ['status', file.status],
    ['created_at', isoTime(file.created_at)],
    ['status_details', file.status_details],
  ]);
}

const print = (io: CliIo, json: boolean, value: unknown, text: () => string) =>
  io.out(json ? JSON.stringify(value, null, 2) : text());

async function upload(args: string[], io: CliIo): Promise<number> {
  return runRemote(args, io, UPLOAD_USAGE, { purpose: { type: 'string' } }, async (ctx) => {
    const [path] = expectPositionals(ctx.positionals, ['path.jsonl']);
    const info = await stat(path).catch(() => undefined);
    if (!info?.isFile()) throw new UsageError(`no such file: ${path}`);
    const content = await readFile(path);
    const file = await ctx.client.upload<FileObject>(
      '/v1/files',
      { name: basename(path), content },
      { purpose: (ctx.values.purpose as string | undefined) ?? 'fine-tune' },
    );
    print(io, ctx.json, file, () => fileLines(file));
    if (file.status === 'error') {
      io.err(
        `error: ${file.filename} failed validation: ${file.status_details ?? 'unknown reason'}`,
      );
      return EXIT_FAILURE;
    }
    return EXIT_OK;
  });
}

async function list(args: string[], io: CliIo): Promise<number> {
  return runRemote(args, io, LIST_USAGE, {}, async (ctx) => {
    expectPositionals(ctx.positionals, []);
    const page = await ctx.client.json<{ data: FileObject[] }>('GET', '/v1/files');
    print(io, ctx.json, page, () =>
      page.data.length === 0
        ? 'No files.'
        : table(
            ['ID', 'STATUS', 'BYTES', 'PURPOSE', 'CREATED', 'FILENAME'],
            page.data.map((f) => [
              f.id,
              f.status,
              f.bytes,
              f.purpose,
              isoTime(f.created_at),
              f.filename,
            ]),
          ),
    );
    return EXIT_OK;
  });
}

async function get(args: string[], io: CliIo): Promise<number> {
  return runRemote(args, io, GET_USAGE, {}, async (ctx) => {
    const [id] = expectPositionals(ctx.positionals, ['file-id']);
    const file = await ctx.client.json<FileObject>('GET', `/v1/files/${encodeURIComponent(id)}`);
    print(io, ctx.json, file, () => fileLines(file));
    return EXIT_OK;
  });
}

async function content(args: string[], io: CliIo): Promise<number> {
  return runRemote(args, io, CONTENT_USAGE, { out: { type: 'string' } }, async (ctx) => {
    const [id] = expectPositionals(ctx.positionals, ['file-id']);
    const bytes = await ctx.client.bytes(`/v1/files/${encodeURIComponent(id)}/content`);
    const out = ctx.values.out as string | undefined;
    if (out) {
      await writeFile(out, bytes);
      io.err(`wrote ${bytes.length} bytes to ${out}`);
    } else {
      process.stdout.write(bytes);
    }
    return EXIT_OK;
  });
}

async function remove(args: string[], io: CliIo): Promise<number> {
  return runRemote(args, io, DELETE_USAGE, {}, async (ctx) => {
    const [id] = expectPositionals(ctx.positionals, ['file-id']);
    const result = await ctx.client.json<{ id: string; deleted: boolean }>(
      'DELETE',
      `/v1/files/${encodeURIComponent(id)}`,
    );
    print(io, ctx.json, result, () => `deleted ${result.id}`);
    return EXIT_OK;
  });
}

export function runFiles(args: string[], io: CliIo): Promise<number> {
  return dispatchGroup(
    'files',
    FILES_USAGE,
    {
      upload: withUsage(UPLOAD_USAGE, upload),
      list: withUsage(LIST_USAGE, list),
      get: withUsage(GET_USAGE, get),
      content: withUsage(CONTENT_USAGE, content),
      delete: withUsage(DELETE_USAGE, remove),
    },
    args,
    io,
  );
}
