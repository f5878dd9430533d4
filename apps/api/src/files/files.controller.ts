import {
  Controller,
  Delete,
  Get,
  HttpCode,
  Param,
  Post,
  Req,
  Res,
  UseGuards,
} from '@nestjs/common';
import type { FileObject } from '@lorafleet/contracts';
import type { AuthenticatedPrincipal } from '@lorafleet/db';
import type { FastifyReply, FastifyRequest } from 'fastify';
import '@fastify/multipart';
import { ApiKeyGuard } from '../auth/api-key.guard';
import { Principal } from '../auth/principal.decorator';
import { ApiError } from '../errors/api-error';
import { FilesService } from './files.service';

/**
 * `attachment` with the stored name: an ASCII fallback in `filename` (quotes, backslashes and
 * controls replaced) and the exact name in RFC 5987's `filename*`. Stored names are well-formed
 * Unicode (uploads refuse lone surrogates), so encodeURIComponent cannot throw.
 */
export function contentDisposition(filename: string): string {
  const ascii = filename.replace(/[^\x20-\x7e]|["\\]/g, '_');
  const encoded = encodeURIComponent(filename).replace(
    /['()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encoded}`;
}

@Controller('v1/files')
@UseGuards(ApiKeyGuard)
export class FilesController {
  constructor(private readonly files: FilesService) {}

  /** multipart/form-data with `file` and `purpose=fine-tune` (the openai client's shape). */
  // OpenAI answers an upload with 200, not 201; the official client does not care, curl users might.
  @Post()
  @HttpCode(200)
  async upload(
    @Principal() principal: AuthenticatedPrincipal,
    @Req() request: FastifyRequest,
  ): Promise<FileObject> {
    if (!request.isMultipart()) {
      throw new ApiError(
        'invalid_request',
        'Expected multipart/form-data with a "file" part',
        'file',
      );
    }
    let purpose: string | undefined;
    let file: { filename: string; content: Buffer } | undefined;
    try {
      for await (const part of request.parts()) {
        if (part.type === 'file') {
          if (part.fieldname !== 'file') {
            await part.toBuffer();
            continue;
          }
          // toBuffer() throws a 413 error once the part exceeds the configured fileSize limit.
          // A part may come without a file name (`filename=""` or none); the column is NOT NULL.
          file = { filename: part.filename || 'file', content: await part.toBuffer() };
        } else if (part.fieldname === 'purpose') {
          purpose = String(part.value);
        }
      }
    } catch (error) {
      // @fastify/multipart's own 413 "reach files limit" says neither what nor why.
      if ((error as { code?: unknown } | null)?.code === 'FST_FILES_LIMIT') {
        throw new ApiError('invalid_request', 'An upload holds one file part', 'file');
      }
      throw error;
    }
    if (!file) throw new ApiError('invalid_request', 'Missing "file" part', 'file');
    return this.files.upload(principal.tenantId, { ...file, purpose });
  }

  @Get()
  async list(@Principal() principal: AuthenticatedPrincipal) {
    return { object: 'list', data: await this.files.list(principal.tenantId), has_more: false };
  }

  @Get(':id')
  async retrieve(
    @Principal() principal: AuthenticatedPrincipal,
    @Param('id') id: string,
  ): Promise<FileObject> {
    return this.files.present(await this.files.get(principal.tenantId, id));
  }

  @Get(':id/content')
  async content(
    @Principal() principal: AuthenticatedPrincipal,
    @Param('id') id: string,
    @Res() reply: FastifyReply,
  ): Promise<void> {
    const file = await this.files.get(principal.tenantId, id);
    const content = await this.files.content(principal.tenantId, id);
    // attachment: a browser saves the tenant's bytes instead of rendering them on our origin.
    await reply
      .header('content-type', 'application/jsonl')
      .header('content-disposition', contentDisposition(file.filename))
      .send(content);
  }

  @Delete(':id')
  delete(@Principal() principal: AuthenticatedPrincipal, @Param('id') id: string) {
    return this.files.delete(principal.tenantId, id);
  }
}
