/**
 * The API key lives in sessionStorage: it survives reloads in this tab, is not shared with
 * other tabs, and is gone when the tab closes. It is never written to localStorage or a cookie,
 * so no other request (and no CSRF) can carry it.
 */
export const SESSION_KEY = 'lorafleet.apiKey';

export interface KeyStore {
  get(): string | null;
  set(key: string): void;
  clear(): void;
}

export function sessionKeyStore(
  storage: Pick<Storage, 'getItem' | 'setItem' | 'removeItem'>,
): KeyStore {
  return {
    get: () => {
      try {
        return storage.getItem(SESSION_KEY);
      } catch {
        return null; // storage disabled (privacy mode): the user signs in again per page load
      }
    },
    set: (key) => {
      try {
        storage.setItem(SESSION_KEY, key);
      } catch {
        /* see get() */
      }
    },
    clear: () => {
      try {
        storage.removeItem(SESSION_KEY);
      } catch {
        /* see get() */
      }
    },
  };
}

/** Trims whitespace and an accidental "Bearer " prefix; null when nothing usable is left. */
export function normaliseApiKey(input: string): string | null {
  const key = input
    .trim()
    .replace(/^bearer\s+/i, '')
    .trim();
  if (!key || /\s/.test(key)) return null;
  return key;
}
