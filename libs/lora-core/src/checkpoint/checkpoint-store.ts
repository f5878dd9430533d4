/**
 * Checkpoint blobs in a directory, for `lorafleet train --checkpoint-dir` (the worker keeps
 * its checkpoints in Postgres instead). Files are `checkpoint-<step, 8 digits>.lfckpt`,
 * written to a temporary name, fsynced and renamed, so a process killed mid-write leaves
 * either the previous set or the complete new file, never a torn one.
 */
import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';

import { CheckpointError, decodeCheckpoint, type CheckpointState } from './checkpoint.codec';

const FILE_PATTERN = /^checkpoint-(\d{8})\.lfckpt$/;

export function checkpointFileName(step: number): string {
  return `checkpoint-${String(step).padStart(8, '0')}.lfckpt`;
}

/** Writes atomically and returns the file path. */
export async function writeCheckpointFile(
  dir: string,
  step: number,
  blob: Uint8Array,
): Promise<string> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, checkpointFileName(step));
  const temporary = `${path}.tmp-${process.pid}`;
  const handle = await open(temporary, 'w');
  try {
    await handle.writeFile(blob);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temporary, path);
  return path;
}

/** Checkpoint files in `dir`, oldest step first. A missing directory has none. */
export async function listCheckpointFiles(
  dir: string,
): Promise<Array<{ step: number; path: string }>> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  return names
    .map((name) => ({ match: FILE_PATTERN.exec(name), name }))
    .filter((entry) => entry.match !== null)
    .map((entry) => ({ step: Number(entry.match![1]), path: join(dir, entry.name) }))
    .sort((a, b) => a.step - b.step);
}

/**
 * The newest checkpoint in `dir` that decodes and verifies; unreadable newer files are
 * reported through `onSkip` and passed over. Null when there is none.
 */
export async function latestCheckpoint(
  dir: string,
  onSkip?: (path: string, reason: string) => void,
): Promise<{ path: string; blob: Uint8Array; state: CheckpointState } | null> {
  const files = await listCheckpointFiles(dir);
  for (const file of files.reverse()) {
    const blob = new Uint8Array(await readFile(file.path));
    try {
      return { path: file.path, blob, state: decodeCheckpoint(blob).state };
    } catch (error) {
      if (!(error instanceof CheckpointError)) throw error;
      onSkip?.(file.path, error.message);
    }
  }
  return null;
}

/** Deletes all but the newest `keep` checkpoint files. */
export async function pruneCheckpoints(dir: string, keep: number): Promise<void> {
  const files = await listCheckpointFiles(dir);
  for (const file of files.slice(0, Math.max(0, files.length - keep)))
    await rm(file.path, { force: true });
}
