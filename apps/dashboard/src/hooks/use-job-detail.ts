import type { FineTuningJob, FineTuningJobEvent } from '@lorafleet/contracts';
import { useRef, useState } from 'preact/hooks';
import { ApiError } from '../lib/api-client';
import type { CheckpointObject, ListPage } from '../lib/api-types';
import {
  fetchEventHistory,
  fetchNewEvents,
  mergeEvents,
  newestSeq,
  type EventPageFetcher,
} from '../lib/events';
import { isTerminal } from '../lib/job-status';
import { jobPath, nextJobPoll, shouldReloadCheckpoints, type FinalSweep } from '../lib/job-detail';
import { api } from './session';
import { usePoller } from './use-poller';

const EVENTS_PAGE = 100;
/** History loaded on first view: enough for every metric of a long run, bounded for the tab. */
export const MAX_EVENT_PAGES = 50;
/** The most events the first view loads (the page says so when a job has more). */
export const MAX_HISTORY_EVENTS = MAX_EVENT_PAGES * EVENTS_PAGE;
/** Pages of new events one poll fetches at the most. */
const MAX_NEW_EVENT_PAGES = 10;

/** What the polling loop remembers between polls (a ref: it must not trigger renders). */
interface PollState {
  etag: string | null;
  job: FineTuningJob | null;
  events: FineTuningJobEvent[];
  historyLoaded: boolean;
  finalSweep: FinalSweep;
  polls: number;
}

export interface JobDetail {
  /** Null until the first poll answers. */
  job: FineTuningJob | null;
  /** Newest first. */
  events: FineTuningJobEvent[];
  /** The history stopped at MAX_HISTORY_EVENTS with older events left unloaded. */
  truncatedHistory: boolean;
  /** Null until loaded. */
  checkpoints: CheckpointObject[] | null;
  /** Why polling stopped for good (no such job, a 4xx), shown instead of the job. */
  fatal: string | null;
  pollNow: () => void;
  /** Shows a job the API just answered with (after an action) and polls again at once. */
  showJob: (job: FineTuningJob) => void;
}

/**
 * One job kept live: polled with If-None-Match, its event log loaded once and then topped up
 * with new pages when the job changed, its checkpoints reloaded now and then.
 */
export function useJobDetail(id: string): JobDetail {
  const [job, setJob] = useState<FineTuningJob | null>(null);
  const [events, setEvents] = useState<FineTuningJobEvent[]>([]);
  const [truncatedHistory, setTruncatedHistory] = useState(false);
  const [checkpoints, setCheckpoints] = useState<CheckpointObject[] | null>(null);
  const [fatal, setFatal] = useState<string | null>(null);

  const base = jobPath(id);
  const state = useRef<PollState>({
    etag: null,
    job: null,
    events: [],
    historyLoaded: false,
    finalSweep: 'none',
    polls: 0,
  });

  const putEvents = (incoming: FineTuningJobEvent[]) => {
    const merged = mergeEvents(state.current.events, incoming);
    if (merged !== state.current.events) {
      state.current.events = merged;
      setEvents(merged);
    }
  };

  const eventPages =
    (signal: AbortSignal): EventPageFetcher =>
    (after) =>
      api.get<ListPage<FineTuningJobEvent>>(
        `${base}/events?limit=${EVENTS_PAGE}${after ? `&after=${encodeURIComponent(after)}` : ''}`,
        { signal },
      );

  const loadCheckpoints = async (signal: AbortSignal) => {
    const page = await api.get<ListPage<CheckpointObject>>(`${base}/checkpoints?limit=100`, {
      signal,
    });
    setCheckpoints(page.data);
  };

  const { pollNow } = usePoller(
    async (signal) => {
      const s = state.current;
      s.polls += 1;
      const result = await api.getConditional<FineTuningJob>(base, s.etag, { signal });
      s.etag = result.etag;
      const previousStatus = s.job?.status;
      if (!result.notModified) {
        s.job = result.data;
        setJob(result.data);
      }
      const current = s.job!;
      if (!s.historyLoaded) {
        const history = await fetchEventHistory(eventPages(signal), MAX_EVENT_PAGES);
        setTruncatedHistory(history.truncated);
        putEvents(history.events);
        await loadCheckpoints(signal);
        s.historyLoaded = true;
        if (isTerminal(current.status)) s.finalSweep = 'done';
      } else if (!result.notModified || s.finalSweep === 'pending') {
        await fetchNewEvents(
          eventPages(signal),
          newestSeq(s.events),
          putEvents,
          MAX_NEW_EVENT_PAGES,
        );
        const reload = shouldReloadCheckpoints({
          statusChanged: previousStatus !== current.status,
          pollNumber: s.polls,
          finalSweep: s.finalSweep,
        });
        if (reload) await loadCheckpoints(signal);
      }
      const next = nextJobPoll(current.status, s.finalSweep);
      s.finalSweep = next.finalSweep;
      return next.delayMs;
    },
    [base],
    {
      onFatal: (error) =>
        setFatal(
          error instanceof ApiError && error.status === 404
            ? `No job ${id} in your organization.`
            : error instanceof Error
              ? error.message
              : String(error),
        ),
    },
  );

  const showJob = (updated: FineTuningJob) => {
    state.current.job = updated;
    state.current.etag = null;
    state.current.finalSweep = 'none';
    setJob(updated);
    pollNow();
  };

  return { job, events, truncatedHistory, checkpoints, fatal, pollNow, showJob };
}
