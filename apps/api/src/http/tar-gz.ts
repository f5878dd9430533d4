import { gzipSync } from 'node:zlib';

export interface TarEntry {
  name: string;
  content: Buffer;
  mtime?: Date;
}

/** One 512-byte POSIX ustar header. Names are short ASCII here (PEFT file names). */
function header(entry: TarEntry): Buffer {
  const block = Buffer.alloc(512, 0);
  const write = (text: string, offset: number, length: number) =>
    block.write(text, offset, length, 'ascii');
  const octal = (value: number, length: number) =>
    value.toString(8).padStart(length - 1, '0') + '\0';
  if (Buffer.byteLength(entry.name) > 100)
    throw new Error(`tar entry name too long: ${entry.name}`);
  write(entry.name, 0, 100);
  write(octal(0o644, 8), 100, 8);
  write(octal(0, 8), 108, 8);
  write(octal(0, 8), 116, 8);
  write(octal(entry.content.length, 12), 124, 12);
  write(octal(Math.floor((entry.mtime ?? new Date(0)).getTime() / 1000), 12), 136, 12);
  write('        ', 148, 8); // checksum field counts as spaces while summing
  write('0', 156, 1);
  write('ustar\0', 257, 6);
  write('00', 263, 2);
  let checksum = 0;
  for (const byte of block) checksum += byte;
  write(octal(checksum, 7) + ' ', 148, 8);
  return block;
}

/** A gzip-compressed tar archive of regular files (for the PEFT directory download). */
export function tarGz(entries: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const entry of entries) {
    parts.push(header(entry), entry.content);
    const padding = (512 - (entry.content.length % 512)) % 512;
    if (padding) parts.push(Buffer.alloc(padding, 0));
  }
  parts.push(Buffer.alloc(1024, 0)); // two zero blocks end the archive
  return gzipSync(Buffer.concat(parts));
}
