import {
  JOB_STATUSES,
  JOB_STATUS_TRANSITIONS,
  TERMINAL_JOB_STATUSES,
  isLegalJobTransition,
  isTerminalJobStatus,
} from '../src';

describe('job status transitions', () => {
  it('has no way out of a terminal state', () => {
    for (const status of TERMINAL_JOB_STATUSES) {
      expect(JOB_STATUS_TRANSITIONS[status]).toEqual([]);
    }
  });

  it('follows DESIGN §4', () => {
    expect(isLegalJobTransition('validating_files', 'queued')).toBe(true);
    expect(isLegalJobTransition('queued', 'running')).toBe(true);
    expect(isLegalJobTransition('running', 'queued')).toBe(true);
    expect(isLegalJobTransition('paused', 'running')).toBe(false);
    expect(isLegalJobTransition('queued', 'succeeded')).toBe(false);
    expect(isLegalJobTransition('succeeded', 'running')).toBe(false);
  });

  it('lets every non-terminal status, and no terminal one, be cancelled', () => {
    for (const status of JOB_STATUSES) {
      expect([status, isLegalJobTransition(status, 'cancelled')]).toEqual([
        status,
        !isTerminalJobStatus(status),
      ]);
    }
  });

  it('makes every non-terminal status reach a terminal one', () => {
    for (const status of JOB_STATUSES) {
      const seen = new Set([status]);
      const frontier = [status];
      while (frontier.length > 0) {
        for (const next of JOB_STATUS_TRANSITIONS[frontier.pop()!]) {
          if (!seen.has(next)) {
            seen.add(next);
            frontier.push(next);
          }
        }
      }
      expect([...seen].some((s) => TERMINAL_JOB_STATUSES.includes(s))).toBe(true);
    }
  });
});
