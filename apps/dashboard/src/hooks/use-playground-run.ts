import { useEffect, useRef, useState } from 'preact/hooks';
import {
  applyUpdate,
  startedColumn,
  streamCompletion,
  type ColumnState,
} from '../lib/completion-stream';
import type { PlaygroundMode } from '../lib/playground-url';
import { toCompletionBody, type PlaygroundFormValues } from '../lib/sampling-form';
import { api } from './session';

export interface PlaygroundColumn {
  model: string;
  isBase: boolean;
  state: ColumnState;
}

/**
 * The playground's streams: one request per column, sent together (the serving worker batches
 * them), each column updated as its events arrive. `stop` aborts them all; the API cancels a
 * request on the worker when its client disconnects. Leaving the page stops them too.
 */
export function usePlaygroundRun() {
  const [columns, setColumns] = useState<PlaygroundColumn[]>([]);
  const [running, setRunning] = useState(false);
  const controller = useRef<AbortController | null>(null);
  const runId = useRef(0);

  useEffect(() => () => controller.current?.abort(), []);

  const send = async (
    models: { model: string; isBase: boolean }[],
    mode: PlaygroundMode,
    values: PlaygroundFormValues,
  ): Promise<void> => {
    controller.current?.abort();
    const abort = new AbortController();
    controller.current = abort;
    const run = ++runId.current;
    const sentAt = performance.now();
    setColumns(models.map((m) => ({ ...m, state: startedColumn(sentAt) })));
    setRunning(true);
    await Promise.all(
      models.map((m, index) =>
        streamCompletion({
          api,
          mode,
          body: toCompletionBody(mode, m.model, values),
          signal: abort.signal,
          onUpdate: (update) => {
            const at = performance.now();
            // A newer run replaced the columns: this one's late events are not theirs.
            if (runId.current !== run) return;
            setColumns((current) =>
              current.map((column, i) =>
                i === index ? { ...column, state: applyUpdate(column.state, update, at) } : column,
              ),
            );
          },
        }),
      ),
    );
    if (runId.current === run) {
      controller.current = null;
      setRunning(false);
    }
  };

  const stop = () => controller.current?.abort();

  return { columns, running, send, stop };
}
