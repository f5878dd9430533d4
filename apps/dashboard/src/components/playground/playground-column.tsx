import {
  COLUMN_STATUS_LABELS,
  columnStats,
  describeColumnError,
  formatLatency,
  formatTokensPerSecond,
} from '../../lib/completion-stream';
import type { PlaygroundColumn } from '../../hooks/use-playground-run';

/**
 * One model's streamed answer with its live figures. The text itself is not a live region
 * (a screen reader would read every token); a polite status says when the answer is complete.
 */
export function PlaygroundColumnCard({
  column,
  index,
}: {
  column: PlaygroundColumn;
  index: number;
}) {
  const { state } = column;
  const stats = columnStats(state);
  const headingId = `column-${index}-title`;
  const busy = state.status === 'waiting' || state.status === 'streaming';
  const rate = formatTokensPerSecond(stats.tokensPerSecond);
  const finished = state.status === 'done' || state.status === 'stopped';
  return (
    <section
      class="card playground-column"
      aria-labelledby={headingId}
      data-model={column.model}
      data-status={state.status}
    >
      <h2 id={headingId} class="playground-column-title">
        <span class={`badge ${column.isBase ? 'badge-model-base' : 'badge-model-adapter'}`}>
          {column.isBase ? 'Base' : 'Adapter'}
        </span>{' '}
        <span class="mono wrap">{column.model}</span>
      </h2>
      <dl class="playground-stats">
        <div>
          <dt>First token</dt>
          <dd class="playground-ttft" data-ms={stats.ttftMs ?? undefined}>
            {formatLatency(stats.ttftMs)}
          </dd>
        </div>
        <div>
          <dt>Tokens/s</dt>
          <dd class="playground-rate" data-tokens-per-second={stats.tokensPerSecond ?? undefined}>
            {rate}
          </dd>
        </div>
        <div>
          <dt>Tokens</dt>
          <dd class="playground-tokens">
            {stats.tokens}
            {stats.exact || stats.tokens === 0 ? '' : '+'}
          </dd>
        </div>
      </dl>
      <p class="muted playground-status">{COLUMN_STATUS_LABELS[state.status]}</p>
      {state.error ? (
        <p class="alert playground-error" role="alert">
          {describeColumnError(state.error)}
        </p>
      ) : null}
      {/* A read-only text box: focusable to scroll a long answer, named, but not a live region. */}
      <pre
        class="playground-output"
        role="textbox"
        aria-readonly="true"
        aria-multiline="true"
        aria-label={`Answer of ${column.model}`}
        aria-busy={busy ? 'true' : 'false'}
        tabIndex={0}
      >
        {state.text}
      </pre>
      {state.finishReason !== null || state.usage !== null ? (
        <p class="playground-usage">
          {state.finishReason !== null ? (
            <>
              finish_reason <code>{state.finishReason}</code>
            </>
          ) : null}
          {state.usage !== null ? (
            <>
              {state.finishReason !== null ? ' · ' : ''}usage: {state.usage.prompt_tokens} prompt +{' '}
              {state.usage.completion_tokens} completion = {state.usage.total_tokens} tokens
            </>
          ) : null}
        </p>
      ) : null}
      <p class="visually-hidden" role="status">
        {finished
          ? `${column.model}: ${COLUMN_STATUS_LABELS[state.status]}, ${stats.tokens} tokens, ${rate} tokens per second.`
          : ''}
      </p>
    </section>
  );
}
