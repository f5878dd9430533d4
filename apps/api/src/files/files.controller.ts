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
    const content = await this.files.content(principal.tenantId, id);
    await reply.header('content-type', 'application/jsonl').send(content);
  }

  @Delete(':id')
  delete(@Principal() principal: AuthenticatedPrincipal, @Param('id') id: string) {
    return this.files.delete(principal.tenantId, id);
  }
}
