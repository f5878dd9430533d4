/**
 * Response shapes the dashboard reads that `@lorafleet/contracts` does not (yet) export as
 * types. Each mirrors the API code named beside it; job, event and file objects come from the
 * contracts package itself.
 */

/** Every list endpoint: OpenAI's cursor page. */
export interface ListPage<T> {
  object: 'list';
  data: T[];
  has_more: boolean;
}

/** apps/api/src/models/models.service.ts `ModelObject`. */
export interface ModelObject {
  id: string;
  object: 'model';
  created: number;
  owned_by: string;
  /** Fine-tuned models only: the base model the adapter applies to. */
  parent?: string;
  /** lorafleet extensions, base models only; null when the API cannot read config.json. */
  architecture?: string | null;
  parameters?: number | null;
  context_length?: number | null;
}

/** apps/api/src/jobs/jobs.service.ts `checkpoints()`. */
export interface CheckpointObject {
  id: string;
  object: 'fine_tuning.job.checkpoint';
  created_at: number;
  fine_tuned_model_checkpoint: string;
  fine_tuning_job_id: string;
  step_number: number;
  metrics: Record<string, unknown>;
  bytes?: number | null;
}

/** apps/api/src/fleet/workers.controller.ts `list()`. */
export interface WorkerObject {
  id: string;
  object: 'worker';
  host: string;
  pid: number | null;
  backend: string | null;
  device: string | null;
  status: string;
  current_job: string | null;
  /** The worker's trainer memory budget (MiB); null from workers that did not report it. */
  memory_limit_mb?: number | null;
  versions: Record<string, unknown> | null;
  started_at: number;
  last_heartbeat_at: number;
  heartbeat_age_seconds: number;
}

export interface WorkersPage extends ListPage<WorkerObject> {
  /** BullMQ job counts per state; null while Redis is unreachable. */
  queue: Record<string, number> | null;
}
