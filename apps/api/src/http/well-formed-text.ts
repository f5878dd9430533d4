import { ApiError } from '../errors/api-error';

/** A high surrogate not followed by a low one, or a low one not preceded by a high one. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

// String.prototype.isWellFormed is ES2024, past this workspace's lib.
const wellFormed = (text: string): boolean => !LONE_SURROGATE.test(text);

/**
 * The path of the first string (or object key) in `value` that holds a lone UTF-16
 * surrogate, e.g. `metadata.a`; null when every string is well formed. Such a string has no
 * UTF-8 form: Postgres refuses it in jsonb and the driver would silently replace it in text.
 */
export function findLoneSurrogate(value: unknown, at: string): string | null {
  if (typeof value === 'string') return wellFormed(value) ? null : at;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = findLoneSurrogate(value[i], at ? `${at}.${i}` : String(i));
      if (found) return found;
    }
    return null;
  }
  if (value && typeof value === 'object') {
    for (const [key, inner] of Object.entries(value as Record<string, unknown>)) {
      // A bad key is named with its surrogate replaced, so the message itself is valid text.
      const shown = key.replace(new RegExp(LONE_SURROGATE.source, 'g'), '\uFFFD');
      const keyPath = at ? `${at}.${shown}` : shown;
      if (!wellFormed(key)) return keyPath;
      const found = findLoneSurrogate(inner, keyPath);
      if (found) return found;
    }
  }
  return null;
}

/** A 400 naming the field when `value` holds a string the database cannot store. */
export function assertWellFormedText(value: unknown, at = ''): void {
  const found = findLoneSurrogate(value, at);
  if (found !== null) {
    throw new ApiError(
      'invalid_request',
      `${found || 'body'}: text must be valid Unicode (it holds a lone UTF-16 surrogate)`,
      found || null,
    );
  }
}
