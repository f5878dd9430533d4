import type { FileStatus } from '@lorafleet/contracts';
import type { DataSource } from 'typeorm';
import { FileEntity } from '../entities';
import { newId, sha256Hex } from '../ids';

export interface NewFile {
  tenantId: string;
  filename: string;
  purpose: string;
  content: Buffer;
  status: FileStatus;
  statusDetails: string | null;
  exampleCount: number;
}

/** The row of a new file: its id, size and digest derived from the content. */
export function newFileRow(file: NewFile): Omit<FileEntity, 'tenant' | 'createdAt'> {
  return {
    ...file,
    id: newId('file'),
    bytes: file.content.byteLength,
    sha256: sha256Hex(file.content),
  };
}

export class FilesRepository {
  constructor(private readonly dataSource: DataSource) {}

  private get repo() {
    return this.dataSource.getRepository(FileEntity);
  }

  async create(file: NewFile): Promise<FileEntity> {
    const row = newFileRow(file);
    await this.repo.insert(row);
    return this.repo.findOneByOrFail({ id: row.id });
  }

  findForTenant(tenantId: string, id: string): Promise<FileEntity | null> {
    return this.repo.findOneBy({ tenantId, id });
  }

  listForTenant(tenantId: string, limit: number): Promise<FileEntity[]> {
    return this.repo.find({
      where: { tenantId },
      order: { createdAt: 'DESC', id: 'DESC' },
      take: limit,
    });
  }

  /** Content is not selected by default (it can be megabytes); fetch it only when needed. */
  async getContent(tenantId: string, id: string): Promise<Buffer | null> {
    const row = await this.repo.findOne({
      select: { id: true, content: true },
      where: { tenantId, id },
    });
    return row ? row.content : null;
  }

  async deleteForTenant(tenantId: string, id: string): Promise<boolean> {
    const result = await this.repo.delete({ tenantId, id });
    return (result.affected ?? 0) > 0;
  }
}
