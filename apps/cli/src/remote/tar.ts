/**
 * Reads the adapter archive (`GET /v1/adapters/{id}/archive`): a gzip-compressed POSIX
 * ustar of regular files. Only what the API writes is supported; anything else (links,
 * absolute or `..` paths) is rejected rather than written.
 */
import { gunzipSync } from 'node:zlib';

export interface TarFile {
  /** Path inside the archive, `/`-separated. */
  name: string;
  content: Buffer;
}

export class TarError extends Error {
  override readonly name = 'TarError';
}

const text = (block: Buffer, offset: number, length: number): string => {
  const raw = block.subarray(offset, offset + length);
  const end = raw.indexOf(0);
  return raw.subarray(0, end === -1 ? raw.length : end).toString('utf8');
};

const octal = (block: Buffer, offset: number, length: number): number => {
  const value = text(block, offset, length).trim();
  if (!/^[0-7]*$/.test(value)) throw new TarError(`bad octal field "${value}" in tar header`);
  return value === '' ? 0 : parseInt(value, 8);
};

export function readTarGz(archive: Buffer): TarFile[] {
  let tar: Buffer;
  try {
    tar = gunzipSync(archive);
  } catch (error) {
    throw new TarError(`the archive is not gzip data: ${(error as Error).message}`);
  }
  const files: TarFile[] = [];
  let offset = 0;
  while (offset + 512 <= tar.length) {
    const header = tar.subarray(offset, offset + 512);
    if (header.every((b) => b === 0)) break; // end-of-archive marker
    let checksum = 0;
    for (let i = 0; i < 512; i++) checksum += i >= 148 && i < 156 ? 32 : header[i];
    if (checksum !== octal(header, 148, 8)) throw new TarError('tar header checksum mismatch');
    const prefix = text(header, 345, 155);
    const name = prefix ? `${prefix}/${text(header, 0, 100)}` : text(header, 0, 100);
    const size = octal(header, 124, 12);
    const type = String.fromCharCode(header[156] || 48);
    offset += 512;
    if (offset + size > tar.length) throw new TarError(`tar entry ${name} is truncated`);
    if (type === '0') {
      files.push({ name, content: Buffer.from(tar.subarray(offset, offset + size)) });
    } else if (type !== '5') {
      throw new TarError(`unsupported tar entry type "${type}" for ${name}`);
    }
    offset += Math.ceil(size / 512) * 512;
  }
  return files;
}

/**
 * The archive's path without its first component (`<adapter id>/…`), checked to stay inside
 * the output directory.
 */
export function safeRelativePath(name: string): string {
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (name.startsWith('/') || parts.some((p) => p === '..' || p.includes('\\'))) {
    throw new TarError(`refusing unsafe path in archive: ${name}`);
  }
  const relative = parts.length > 1 ? parts.slice(1) : parts;
  if (relative.length === 0) throw new TarError(`empty path in archive: ${name}`);
  return relative.join('/');
}
