import { type CanActivate, type ExecutionContext, Injectable } from '@nestjs/common';
import type { AuthenticatedRequest } from './api-key.guard';
import { ApiError } from '../errors/api-error';

/** Admin-only routes; runs after ApiKeyGuard. */
@Injectable()
export class AdminGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    if (!context.switchToHttp().getRequest<AuthenticatedRequest>().principal.isAdmin) {
      throw new ApiError('permission_denied', 'This endpoint needs an admin API key');
    }
    return true;
  }
}
