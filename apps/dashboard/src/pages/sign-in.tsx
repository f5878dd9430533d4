import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiClient, ApiError, NetworkError } from '../lib/api-client';
import { normaliseApiKey } from '../lib/session';
import { navigate } from '../hooks/router';
import { session } from '../hooks/session';

/** Checks a key with an authenticated read before keeping it. */
export function SignInPage({ next }: { next: string | null }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [notice] = useState(() => session.takeNotice());
  const [busy, setBusy] = useState(false);
  const inputRef = useRef<HTMLInputElement>(null);

  useEffect(() => inputRef.current?.focus(), []);

  const submit = async (event: Event) => {
    event.preventDefault();
    const candidate = normaliseApiKey(key);
    if (!candidate) {
      setError('Paste an API key (it has no spaces).');
      inputRef.current?.focus();
      return;
    }
    setBusy(true);
    setError(null);
    try {
      await new ApiClient({ getKey: () => candidate }).get('/v1/fine_tuning/jobs?limit=1');
      session.signIn(candidate);
      navigate(next ?? '/jobs', { replace: true });
    } catch (caught) {
      if (caught instanceof ApiError && caught.status === 401)
        setError('That key was not accepted: it is wrong or revoked.');
      else if (caught instanceof NetworkError) setError(caught.message);
      else setError(caught instanceof Error ? caught.message : String(caught));
      inputRef.current?.focus();
    } finally {
      setBusy(false);
    }
  };

  return (
    <section class="sign-in card" aria-labelledby="page-title">
      <h1 id="page-title" tabIndex={-1}>
        Sign in
      </h1>
      <p class="muted">
        Use a lorafleet API key (<code>lorafleet admin db create-tenant</code> prints one). It stays
        in this tab only (sessionStorage) and is sent as a Bearer token to this server.
      </p>
      {notice ? (
        <p class="notice" role="status">
          {notice}
        </p>
      ) : null}
      <form onSubmit={(e) => void submit(e)} noValidate>
        <div class="field">
          <label for="api-key">API key</label>
          <input
            ref={inputRef}
            id="api-key"
            name="api-key"
            type="password"
            autoComplete="off"
            spellcheck={false}
            value={key}
            onInput={(e) => setKey(e.currentTarget.value)}
            aria-invalid={error ? true : undefined}
            aria-describedby={error ? 'api-key-error' : undefined}
            required
          />
          {error ? (
            <p id="api-key-error" class="field-error" role="alert">
              {error}
            </p>
          ) : null}
        </div>
        <button type="submit" class="button button-primary" disabled={busy}>
          {busy ? 'Checking…' : 'Sign in'}
        </button>
      </form>
    </section>
  );
}
