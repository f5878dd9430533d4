import { connection, useConnectionFailures } from '../hooks/connection';
import { useNow } from '../hooks/use-now';

/** Shown while any live view cannot reach the API; the pollers retry with backoff meanwhile. */
export function ConnectionBanner() {
  const failures = useConnectionFailures();
  const now = useNow(500);
  if (failures.length === 0) return null;
  const nextRetry = Math.min(...failures.map((f) => f.retryAt));
  const seconds = Math.max(0, Math.ceil((nextRetry - now) / 1000));
  return (
    <div class="banner banner-error" role="alert" data-testid="connection-banner">
      <p>
        <strong>Connection problem.</strong> {failures[0].message.replace(/\.$/, '')}.{' '}
        {seconds > 0 ? `Retrying in ${seconds} s.` : 'Retrying…'}
      </p>
      <button type="button" class="button button-small" onClick={() => connection.retryAll()}>
        Retry now
      </button>
    </div>
  );
}
