// Helpers the process benchmarks (bench:worker, bench:serve) share.
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The p-th percentile (nearest rank below), or null for no values. */
export const percentile = (values, p) => {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
};

/** A Linux process's `/proc/<pid>/status` field in kB (VmHWM = peak RSS), or null. */
export const procStatusKb = (pid, field) => {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const match = status.match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
    return match ? Number(match[1]) : null;
  } catch {
    return null;
  }
};

/** Peak RSS of a process in MiB (VmHWM), or null where /proc cannot tell. */
export const peakRssMb = (pid) => {
  const kb = procStatusKb(pid, 'VmHWM');
  return kb === null ? null : Math.round(kb / 1024);
};

/**
 * Starts a new peak-RSS window for a process (Linux `clear_refs` 5 resets VmHWM to the current
 * RSS), so one section's peak is not an earlier section's. Returns whether it could.
 */
export const resetPeakRss = (pid) => {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
};

/** The direct children of a process (Linux), e.g. a worker's serving child. */
export const childPids = (pid) => {
  try {
    return readdirSync(`/proc/${pid}/task`).flatMap((task) =>
      readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8')
        .split(/\s+/)
        .filter((id) => id !== '')
        .map(Number),
    );
  } catch {
    return [];
  }
};

/** CPU time a Linux process has used so far (user + system), ms; null where /proc cannot tell. */
export const processCpuMs = (pid) => {
  try {
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // USER_HZ is 100 on Linux
  } catch {
    return null;
  }
};
