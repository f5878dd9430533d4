import { useEffect, useState } from 'preact/hooks';
import { ApiClient } from '../lib/api-client';
import { sessionKeyStore } from '../lib/session';
import { navigate } from './router';

/** The signed-in state: the API key in sessionStorage and a one-off notice for the sign-in page. */
function tabStorage(): Pick<Storage, 'getItem' | 'setItem' | 'removeItem'> {
  try {
    return window.sessionStorage; // throws where storage is blocked
  } catch {
    const memory = new Map<string, string>(); // then the key lasts until the page unloads
    return {
      getItem: (k) => memory.get(k) ?? null,
      setItem: (k, v) => void memory.set(k, v),
      removeItem: (k) => void memory.delete(k),
    };
  }
}

const keys = sessionKeyStore(tabStorage());
let notice: string | null = null;
const listeners = new Set<() => void>();
const emit = () => listeners.forEach((listener) => listener());

export const session = {
  key: (): string | null => keys.get(),
  signIn(key: string): void {
    keys.set(key);
    notice = null;
    emit();
  },
  signOut(message: string | null = null): void {
    keys.clear();
    notice = message;
    emit();
  },
  takeNotice(): string | null {
    const text = notice;
    notice = null;
    return text;
  },
};

/** The app's one API client: same origin, Bearer key from the session. */
export const api = new ApiClient({
  getKey: () => session.key(),
  onUnauthorized: () => {
    if (!session.key()) return;
    session.signOut('The API rejected your key (revoked or wrong). Sign in again.');
    const here = window.location.pathname + window.location.search;
    navigate(`/sign-in?next=${encodeURIComponent(here)}`, { replace: true });
  },
});

export function useSignedIn(): boolean {
  const [signedIn, setSignedIn] = useState(() => session.key() !== null);
  useEffect(() => {
    const update = () => setSignedIn(session.key() !== null);
    listeners.add(update);
    return () => void listeners.delete(update);
  }, []);
  return signedIn;
}
