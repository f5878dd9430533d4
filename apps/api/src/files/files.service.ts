import { Inject, Injectable } from '@nestjs/common';
import type { ApiEnv, FileObject } from '@lorafleet/contracts';
import { validateJsonl } from '@lorafleet/data';
import { FilesRepository, type FileEntity } from '@lorafleet/db';
import { API_ENV } from '../config/api-env.token';
import { ApiError } from '../errors/api-error';
import { assertWellFormedText } from '../http/well-formed-text';

export interface UploadedFile {
  filename: string;
  purpose: string | undefined;
  content: Buffer;
}

@Injectable()
export class FilesService {
  constructor(
    private readonly files: FilesRepository,
    @Inject(API_ENV) private readonly env: ApiEnv,
  ) {}

  /**
   * Validates a JSONL upload with libs/data's validator. A bad file is still stored, with
   * `status: "error"` and the line errors in `status_details`, as OpenAI does; jobs refuse it.
   */
  async upload(tenantId: string, upload: UploadedFile): Promise<FileObject> {
    if (upload.purpose !== 'fine-tune') {
      throw new ApiError('invalid_request', 'purpose must be "fine-tune"', 'purpose');
    }
    // The name is stored as text; a lone surrogate has no UTF-8 form.
    assertWellFormedText(upload.filename, 'file');
    const result = validateJsonl(upload.content, {
      maxBytes: this.env.LORAFLEET_UPLOAD_MAX_BYTES,
      maxRows: this.env.LORAFLEET_UPLOAD_MAX_ROWS,
      maxLineBytes: this.env.LORAFLEET_UPLOAD_MAX_LINE_BYTES,
      minExamples: this.env.LORAFLEET_MIN_EXAMPLES,
    });
    const details = result.ok
      ? null
      : [
          `${result.errorCount} problem(s) found:`,
          ...result.errors.map((e) => (e.line > 0 ? `line ${e.line}: ${e.reason}` : e.reason)),
        ]
          .join('\n')
          // Reasons may quote the offending bytes; Postgres text cannot hold NUL.
          .replaceAll('\u0000', '\\u0000');
    const entity = await this.files.create({
      tenantId,
      filename: upload.filename,
      purpose: upload.purpose,
      content: upload.content,
      status: result.ok ? 'processed' : 'error',
      statusDetails: details,
      // A valid file holds one kind; jobs check it against their method.
      kind:
        result.ok && (result.kind === 'sft' || result.kind === 'preference') ? result.kind : null,
      exampleCount: result.examples,
    });
    return this.present(entity);
  }

  async get(tenantId: string, id: string): Promise<FileEntity> {
    const file = await this.files.findForTenant(tenantId, id);
    if (!file) throw new ApiError('not_found', `No such file: ${id}`, 'file_id');
    return file;
  }

  async content(tenantId: string, id: string): Promise<Buffer> {
    const content = await this.files.getContent(tenantId, id);
    if (!content) throw new ApiError('not_found', `No such file: ${id}`, 'file_id');
    return content;
  }

  async list(tenantId: string): Promise<FileObject[]> {
    return (await this.files.listForTenant(tenantId, 10_000)).map((f) => this.present(f));
  }

  async delete(
    tenantId: string,
    id: string,
  ): Promise<{ id: string; object: 'file'; deleted: true }> {
    if (!(await this.files.deleteForTenant(tenantId, id))) {
      throw new ApiError('not_found', `No such file: ${id}`, 'file_id');
    }
    return { id, object: 'file', deleted: true };
  }

  present(file: FileEntity): FileObject {
    return {
      id: file.id,
      object: 'file',
      bytes: file.bytes,
      created_at: Math.floor(file.createdAt.getTime() / 1000),
      filename: file.filename,
      purpose: file.purpose === 'fine-tune-results' ? 'fine-tune-results' : 'fine-tune',
      status: file.status,
      status_details: file.statusDetails,
      kind: file.kind,
    };
  }
}
