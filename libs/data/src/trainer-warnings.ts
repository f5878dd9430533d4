import type { PreflightSummary } from './preflight.summary';

/**
 * The warning both the worker (as a `warn` event) and the CLI print when more than `share`
 * of the examples lose completion tokens to truncation: those examples train on less than
 * the user wrote, silently, unless someone says so. Null below the share.
 */
export function truncationWarning(
  summary: Pick<
    PreflightSummary,
    'examples' | 'examplesWithTruncatedTargets' | 'longestKeptTokens' | 'longestExampleTokens'
  >,
  share: number,
): string | null {
  const { examples, examplesWithTruncatedTargets: cut } = summary;
  if (examples === 0 || cut / examples <= share) return null;
  // An example that lost targets was cut, so the longest kept sequence is max_seq_length.
  return (
    `${cut} of ${examples} examples (${Math.round((100 * cut) / examples)}%) lose completion ` +
    `tokens to truncation at max_seq_length ${summary.longestKeptTokens}; the longest example ` +
    `has ${summary.longestExampleTokens} tokens. Raise max_seq_length ` +
    `(training.max_seq_length, --max-seq-length) or shorten the prompts.`
  );
}

/**
 * A trainer failure that means memory ran out: the wasm backend's heap (Emscripten's
 * `abort()` surfaces as `RuntimeError: Aborted(...)`, a failed heap growth as a RangeError),
 * or an allocation the host refused. Its raw text explains nothing to a user, so callers
 * replace it with `outOfMemoryMessage`.
 */
export function isOutOfMemoryError(error: unknown): boolean {
  // WebAssembly.RuntimeError (by name: this library is built without the wasm type lib).
  if (error instanceof Error && error.name === 'RuntimeError') return true;
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return OUT_OF_MEMORY_TEXT.test(text);
}

/** What wasm aborts, failed heap growth and refused allocations print. */
export const OUT_OF_MEMORY_TEXT =
  /Aborted\(|out of memory|Cannot enlarge memory|Maximum memory size exceeded|WebAssembly\.Memory|Array buffer allocation failed|allocation failed/i;

/**
 * The message that replaces a raw out-of-memory failure: what was estimated (when the
 * pre-flight got that far) and what to change.
 */
export function outOfMemoryMessage(options: {
  estimateMb: number | null;
  limitMb: number | null;
  advice: string | null;
}): string {
  const estimate =
    options.estimateMb === null
      ? ''
      : ` (the pre-flight estimate was about ${options.estimateMb.toLocaleString('en-US')} MiB` +
        (options.limitMb === null
          ? ')'
          : `, the memory limit ${options.limitMb.toLocaleString('en-US')} MiB)`);
  const advice =
    options.advice ??
    'To fit: turn on gradient checkpointing (--gradient-checkpointing, training.gradient_checkpointing), lower the batch size, shorten max_seq_length, or run it on a worker with more memory or a GPU backend.';
  return `the trainer ran out of memory${estimate}. ${advice}`;
}
