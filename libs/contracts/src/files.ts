import { z } from 'zod';

export const FILE_PURPOSES = ['fine-tune'] as const;
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
