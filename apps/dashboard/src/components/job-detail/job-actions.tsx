import type { FineTuningJob } from '@lorafleet/contracts';
import type { JobAction, JobActionState } from '../../hooks/use-job-action';
import { allowedActions } from '../../lib/job-status';
import { ConfirmDialog } from '../confirm-dialog';

const ACTION_TEXT: Record<
  JobAction,
  { title: string; body: string; confirm: string; danger: boolean }
> = {
  cancel: {
    title: 'Cancel this job?',
    body: 'Training stops within seconds and the job ends as cancelled. This cannot be undone; no adapter is kept.',
    confirm: 'Yes, cancel job',
    danger: true,
  },
  pause: {
    title: 'Pause this job?',
    body: 'The worker saves a checkpoint, stops and frees its device. Resume continues from the last checkpoint.',
    confirm: 'Yes, pause',
    danger: false,
  },
  resume: {
    title: 'Resume this job?',
    body: 'The job goes back in the queue and continues from its last checkpoint on the next free worker.',
    confirm: 'Yes, resume',
    danger: false,
  },
};

/** Pause, Resume and Cancel job: only those the API would accept in `status`. */
export function JobActions({
  status,
  onAction,
}: {
  status: FineTuningJob['status'];
  onAction: (action: JobAction) => void;
}) {
  const actions = allowedActions(status);
  return (
    <div class="actions" role="group" aria-label="Job actions">
      {actions.pause ? (
        <button type="button" class="button" onClick={() => onAction('pause')}>
          Pause
        </button>
      ) : null}
      {actions.resume ? (
        <button type="button" class="button" onClick={() => onAction('resume')}>
          Resume
        </button>
      ) : null}
      {actions.cancel ? (
        <button
          type="button"
          class="button button-danger-outline"
          onClick={() => onAction('cancel')}
        >
          Cancel job
        </button>
      ) : null}
    </div>
  );
}

/** The confirmation for the pending action; a refusal shows inside it. */
export function JobActionDialog({ action }: { action: JobActionState }) {
  const text = action.pending ? ACTION_TEXT[action.pending] : null;
  return (
    <ConfirmDialog
      open={text !== null}
      title={text?.title ?? ''}
      confirmLabel={text?.confirm ?? ''}
      danger={text?.danger ?? false}
      busy={action.busy}
      onConfirm={action.confirm}
      onCancel={action.dismiss}
    >
      <p>{text?.body ?? ''}</p>
      {action.error && text ? (
        <p class="field-error" role="alert">
          {action.error}
        </p>
      ) : null}
    </ConfirmDialog>
  );
}
