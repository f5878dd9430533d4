/** Prefixes of public ids, as OpenAI uses them (`ftjob-…`, `file-…`). */
export const ID_PREFIXES = {
  job: 'ftjob',
  file: 'file',
  event: 'ftevent',
  checkpoint: 'ftckpt',
  adapter: 'adapter',
  tenant: 'org',
  apiKey: 'key',
  worker: 'worker',
} as const;
export type IdKind = keyof typeof ID_PREFIXES;

/** `ft:<base>:<tenant>:<suffix>:<job>` (DESIGN §4). The suffix part is empty when none was given. */
export function fineTunedModelName(
  base: string,
  tenantId: string,
  suffix: string | null,
  jobId: string,
): string {
  return `ft:${base}:${tenantId}:${suffix ?? ''}:${jobId}`;
}
