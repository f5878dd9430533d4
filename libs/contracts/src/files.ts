import { z } from 'zod';

/** `fine-tune` for uploads; `fine-tune-results` for the step-metrics CSV a job produces. */
export const FILE_PURPOSES = ['fine-tune', 'fine-tune-results'] as const;
export const FilePurposeSchema = z.enum(FILE_PURPOSES);

/** `uploaded` → `processed` after validation, or `error` with `status_details`. */
export const FileStatusSchema = z.enum(['uploaded', 'processed', 'error']);
export type FileStatus = z.infer<typeof FileStatusSchema>;

/**
 * What a valid training file holds: chat/prompt-completion lines (`sft`) or DPO preference
 * pairs (`preference`). A job's `method.type` takes one kind: supervised `sft`, dpo `preference`.
 */
export const FileKindSchema = z.enum(['sft', 'preference']);
export type FileKind = z.infer<typeof FileKindSchema>;

export const FileObjectSchema = z.object({
  id: z.string(),
  object: z.literal('file'),
  bytes: z.number().int(),
  created_at: z.number().int(),
  filename: z.string(),
  purpose: FilePurposeSchema,
  status: FileStatusSchema,
  status_details: z.string().nullable(),
  /**
   * lorafleet extension: what the file holds, `sft` or `preference`; null when it failed
   * validation or is a results file.
   */
  kind: FileKindSchema.nullable(),
});
export type FileObject = z.infer<typeof FileObjectSchema>;
