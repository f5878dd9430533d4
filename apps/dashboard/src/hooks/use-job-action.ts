import type { FineTuningJob } from '@lorafleet/contracts';
import { useState } from 'preact/hooks';
import { api } from './session';

export type JobAction = 'cancel' | 'pause' | 'resume';

export interface JobActionState {
  /** The action awaiting confirmation (its dialog is open), or null. */
  pending: JobAction | null;
  /** The confirmed action's request is in flight. */
  busy: boolean;
  /** Why the API refused the last action. */
  error: string | null;
  /** Opens the confirmation for `action`. */
  ask: (action: JobAction) => void;
  /** Closes the confirmation without acting. */
  dismiss: () => void;
  /** Sends the pending action. */
  confirm: () => void;
}

/**
 * Cancel, pause and resume behind a confirmation. `onDone` gets the job the API answered
 * with; `onRefused` runs after a refusal, which usually means the job moved on (it finished
 * while the tab was hidden, say), so the page shows its state now rather than at the next poll.
 */
export function useJobAction(
  jobPath: string,
  onDone: (job: FineTuningJob) => void,
  onRefused: () => void,
): JobActionState {
  const [pending, setPending] = useState<JobAction | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  const run = async (action: JobAction) => {
    setBusy(true);
    setError(null);
    try {
      const updated = await api.post<FineTuningJob>(`${jobPath}/${action}`);
      onDone(updated);
      setPending(null);
    } catch (caught) {
      setError(caught instanceof Error ? caught.message : String(caught));
      onRefused();
    } finally {
      setBusy(false);
    }
  };

  return {
    pending,
    busy,
    error,
    ask: setPending,
    dismiss: () => {
      setPending(null);
      setError(null);
    },
    confirm: () => {
      if (pending) void run(pending);
    },
  };
}
