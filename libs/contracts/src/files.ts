import { z } from 'zod';

/** `fine-tune` for uploads; `fine-tune-results` for the step-metrics CSV a job produces. */
export const FILE_PURPOSES = ['fine-tune', 'fine-tune-results'] as const;
export const FilePurposeSchema = z.enum(FILE_PURPOSES);

/** `uploaded` → `processed` after validation, or `error` with `status_details`. */
export const FileStatusSchema = z.enum(['uploaded', 'processed', 'error']);
export type FileStatus = z.infer<typeof FileStatusSchema>;

export const FileObjectSchema = z.object({
  id: z.string(),
  object: z.literal('file'),
  bytes: z.number().int(),
  created_at: z.number().int(),
  filename: z.string(),
  purpose: FilePurposeSchema,
  status: FileStatusSchema,
  status_details: z.string().nullable(),
});
export type FileObject = z.infer<typeof FileObjectSchema>;
