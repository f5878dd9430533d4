import { ID_PREFIXES, type IdKind } from '@lorafleet/contracts';
import { createHash, randomBytes } from 'node:crypto';

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** `ftjob-<24 base62 chars>`: ~143 bits of randomness, URL-safe, OpenAI-looking. */
export function newId(kind: IdKind): string {
  const bytes = randomBytes(24);
  let body = '';
  for (const byte of bytes) body += ALPHABET[byte % 62];
  return `${ID_PREFIXES[kind]}-${body}`;
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * `evt_<24 base62 chars>`: the underscore style of OpenAI's webhook objects (`evt_…`), used
 * for webhook events, endpoints and deliveries (issue 20).
 */
export function newUnderscoreId(prefix: 'evt' | 'we' | 'whdel'): string {
  const bytes = randomBytes(24);
  let body = '';
  for (const byte of bytes) body += ALPHABET[byte % 62];
  return `${prefix}_${body}`;
}
