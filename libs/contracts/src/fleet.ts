/**
 * Heartbeats arrive every few seconds (LORAFLEET_HEARTBEAT_MS, default 5 s): a worker silent
 * for this long is gone. The API shows it so, and a worker handing back a job it cannot fit
 * only counts workers heard from within it.
 */
export const WORKER_GONE_AFTER_MS = 30_000;
