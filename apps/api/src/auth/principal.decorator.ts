import { createParamDecorator, type ExecutionContext } from '@nestjs/common';
import type { AuthenticatedPrincipal } from '@lorafleet/db';
import type { AuthenticatedRequest, DeferredApiKey, DeferredAuthRequest } from './api-key.guard';

/** The tenant and key that authenticated this request (set by ApiKeyGuard). */
export const Principal = createParamDecorator(
  (_data: unknown, context: ExecutionContext): AuthenticatedPrincipal =>
    context.switchToHttp().getRequest<AuthenticatedRequest>().principal,
);

/** The key ApiKeyGuard left unresolved on a `DeferApiKeyCheck` route. */
export const PresentedApiKey = createParamDecorator(
  (_data: unknown, context: ExecutionContext): DeferredApiKey => {
    const key = context.switchToHttp().getRequest<DeferredAuthRequest>().deferredApiKey;
    if (!key) throw new Error('@PresentedApiKey() needs @DeferApiKeyCheck() on its route');
    return key;
  },
);
