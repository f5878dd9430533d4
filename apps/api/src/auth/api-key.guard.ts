import { type CanActivate, type ExecutionContext, Injectable, SetMetadata } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { ApiKeysRepository, type AuthenticatedPrincipal } from '@lorafleet/db';
import type { FastifyRequest } from 'fastify';
import { ApiError } from '../errors/api-error';

export type AuthenticatedRequest = FastifyRequest & { principal: AuthenticatedPrincipal };

/** A request whose key the handler checks itself, in the same query as its read. */
export type InlineAuthRequest = FastifyRequest & {
  apiKey: string;
  principal?: AuthenticatedPrincipal;
};

const INLINE_AUTH = 'lorafleet:inline-auth';

/**
 * Marks a hot read whose handler checks the API key in the same Postgres round trip as its
 * data (`ApiKeysRepository.authenticateWithJob`). The guard still refuses a missing or malformed
 * header; the handler must answer 401 when the key does not resolve.
 */
export const InlineApiKeyCheck = () => SetMetadata(INLINE_AUTH, true);

export const MISSING_KEY_MESSAGE = 'Missing API key. Send it as "Authorization: Bearer <key>".';
export const BAD_KEY_MESSAGE = 'Incorrect or revoked API key provided.';

/** Bearer API key → tenant (DESIGN §2). Every /v1 route runs behind it. */
@Injectable()
export class ApiKeyGuard implements CanActivate {
  constructor(
    private readonly apiKeys: ApiKeysRepository,
    private readonly reflector: Reflector,
  ) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const request = context.switchToHttp().getRequest<AuthenticatedRequest & InlineAuthRequest>();
    const header = request.headers.authorization;
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
    if (!match) throw new ApiError('invalid_api_key', MISSING_KEY_MESSAGE);
    if (this.reflector.get<boolean | undefined>(INLINE_AUTH, context.getHandler())) {
      request.apiKey = match[1];
      return true;
    }
    const principal = await this.apiKeys.authenticate(match[1]);
    if (!principal) throw new ApiError('invalid_api_key', BAD_KEY_MESSAGE);
    request.principal = principal;
    return true;
  }
}
