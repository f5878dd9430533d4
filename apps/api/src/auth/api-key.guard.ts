import { type CanActivate, type ExecutionContext, Injectable } from '@nestjs/common';
import { TenantsRepository, type AuthenticatedPrincipal } from '@lorafleet/db';
import type { FastifyRequest } from 'fastify';
import { ApiError } from '../errors/api-error';

export type AuthenticatedRequest = FastifyRequest & { principal: AuthenticatedPrincipal };

/** Bearer API key → tenant (DESIGN §2). Every /v1 route runs behind it. */
@Injectable()
export class ApiKeyGuard implements CanActivate {
  constructor(private readonly tenants: TenantsRepository) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const request = context.switchToHttp().getRequest<AuthenticatedRequest>();
    const header = request.headers.authorization;
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
    if (!match) {
      throw new ApiError(
        'invalid_api_key',
        'Missing API key. Send it as "Authorization: Bearer <key>".',
      );
    }
    const principal = await this.tenants.authenticate(match[1]);
    if (!principal) throw new ApiError('invalid_api_key', 'Incorrect or revoked API key provided.');
    request.principal = principal;
    return true;
  }
}
