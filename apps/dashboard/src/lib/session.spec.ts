import { SESSION_KEY, normaliseApiKey, sessionKeyStore } from './session';

class MemoryStorage {
  items = new Map<string, string>();
  getItem(key: string) {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string) {
    this.items.set(key, value);
  }
  removeItem(key: string) {
    this.items.delete(key);
  }
}

describe('session key store', () => {
  it('keeps the key under one sessionStorage entry and forgets it on sign-out', () => {
    const storage = new MemoryStorage();
    const store = sessionKeyStore(storage);
    expect(store.get()).toBeNull();
    store.set('lf-abc');
    expect(storage.items.get(SESSION_KEY)).toBe('lf-abc');
    expect(store.get()).toBe('lf-abc');
    store.clear();
    expect(store.get()).toBeNull();
  });

  it('survives a storage that throws (disabled storage)', () => {
    const broken = {
      getItem: () => {
        throw new Error('denied');
      },
      setItem: () => {
        throw new Error('denied');
      },
      removeItem: () => {
        throw new Error('denied');
      },
    };
    const store = sessionKeyStore(broken);
    expect(() => store.set('k')).not.toThrow();
    expect(store.get()).toBeNull();
    expect(() => store.clear()).not.toThrow();
  });

  it('normalises pasted keys', () => {
    expect(normaliseApiKey('  lf-abc \n')).toBe('lf-abc');
    expect(normaliseApiKey('Bearer lf-abc')).toBe('lf-abc');
    expect(normaliseApiKey('   ')).toBeNull();
    expect(normaliseApiKey('two words')).toBeNull();
  });
});
