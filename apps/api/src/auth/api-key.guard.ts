import { type CanActivate, type ExecutionContext, Injectable, SetMetadata } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { ApiKeysRepository, type AuthenticatedPrincipal } from '@lorafleet/db';
import type { FastifyRequest } from 'fastify';
import { ApiError } from '../errors/api-error';

export type AuthenticatedRequest = FastifyRequest & { principal: AuthenticatedPrincipal };

/**
 * A well-formed API key whose lookup the guard left to the handler, to be done in the same
 * Postgres round trip as the handler's read. Whoever resolves it reports the principal back,
 * so the request log names the tenant like on every other route; nothing else of the request
 * reaches the service.
 */
export class DeferredApiKey {
  constructor(
    readonly plaintext: string,
    private readonly onResolved: (principal: AuthenticatedPrincipal) => void,
  ) {}

  resolvedTo(principal: AuthenticatedPrincipal): void {
    this.onResolved(principal);
  }
}

/** A request on a route marked `DeferApiKeyCheck`, after the guard. */
export type DeferredAuthRequest = FastifyRequest & {
  principal?: AuthenticatedPrincipal;
  deferredApiKey?: DeferredApiKey;
};

const DEFER_KEY_CHECK = 'lorafleet:defer-api-key-check';

/**
 * Marks a hot read whose handler checks the API key in the same Postgres round trip as its
 * data (`ApiKeysRepository.authenticateWithJob`), taking it with `@PresentedApiKey()`. The
 * guard still refuses a missing or malformed header; the handler must answer 401 when the key
 * does not resolve.
 */
export const DeferApiKeyCheck = () => SetMetadata(DEFER_KEY_CHECK, true);

export const MISSING_KEY_MESSAGE = 'Missing API key. Send it as "Authorization: Bearer <key>".';
export const BAD_KEY_MESSAGE = 'Incorrect or revoked API key provided.';

/** Bearer API key → principal (DESIGN §2). Every /v1 route runs behind it. */
@Injectable()
export class ApiKeyGuard implements CanActivate {
  constructor(
    private readonly apiKeys: ApiKeysRepository,
    private readonly reflector: Reflector,
  ) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const request = context.switchToHttp().getRequest<DeferredAuthRequest>();
    const header = request.headers.authorization;
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
    if (!match) throw new ApiError('invalid_api_key', MISSING_KEY_MESSAGE);
    if (this.reflector.get<boolean | undefined>(DEFER_KEY_CHECK, context.getHandler())) {
      request.deferredApiKey = new DeferredApiKey(match[1], (principal) => {
        request.principal = principal;
      });
      return true;
    }
    const principal = await this.apiKeys.authenticate(match[1]);
    if (!principal) throw new ApiError('invalid_api_key', BAD_KEY_MESSAGE);
    request.principal = principal;
    return true;
  }
}
