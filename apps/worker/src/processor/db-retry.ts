/** Connection-level failures worth waiting out (Postgres restarting, R24). */
export function isDatabaseUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const rawCode = (error as { code?: unknown }).code;
  const code = typeof rawCode === 'string' || typeof rawCode === 'number' ? String(rawCode) : '';
  return (
    [
      'ECONNREFUSED',
      'ECONNRESET',
      'ETIMEDOUT',
      '57P01',
      '57P02',
      '57P03',
      '08006',
      '08001',
      '08003',
    ].includes(code) ||
    /Connection terminated|terminating connection|timeout exceeded when trying to connect|Connection is closed/i.test(
      error.message,
    )
  );
}

/**
 * Runs a write, retrying with backoff while Postgres is unreachable, so a database restart
 * during training loses neither the adapter nor the final status. Other errors propagate.
 */
export async function retryWhileDatabaseDown<T>(
  write: () => Promise<T>,
  maxWaitMs = 120_000,
): Promise<T> {
  const deadline = Date.now() + maxWaitMs;
  for (let delay = 200; ; delay = Math.min(delay * 2, 5000)) {
    try {
      return await write();
    } catch (error) {
      if (!isDatabaseUnavailable(error) || Date.now() + delay > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}
