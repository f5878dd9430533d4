import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter as BullBoardFastifyAdapter } from '@bull-board/fastify';
import { openAiError } from '@lorafleet/contracts';
import type { ApiKeysRepository } from '@lorafleet/db';
import type { Queue } from 'bullmq';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

export const BULL_BOARD_PATH = '/admin/queues';
type BoardArgs = Parameters<typeof createBullBoard>[0];

const REALM = 'Basic realm="lorafleet admin", charset="UTF-8"';

/** The password of an `Authorization: Basic` header (any user name), or null. */
export function basicAuthPassword(header: string | undefined): string | null {
  const match = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header ?? '');
  if (!match) return null;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon < 0 ? null : decoded.slice(colon + 1);
}

/**
 * bull-board at /admin/queues behind HTTP Basic, with a fleet admin API key as the password: a
 * browser link cannot carry a Bearer token (DESIGN §4 Ops). Missing or non-admin credentials
 * answer 401 with `WWW-Authenticate` so the browser asks again. The board is read-only:
 * Postgres is the record of truth, and job control goes through the REST API, which writes
 * status events; a job removed from Redis by hand would only be re-enqueued by the reconciler.
 */
export function bullBoardPlugin(queue: Queue, apiKeys: ApiKeysRepository) {
  return async (scope: FastifyInstance): Promise<void> => {
    const serverAdapter = new BullBoardFastifyAdapter();
    serverAdapter.setBasePath(BULL_BOARD_PATH);
    createBullBoard({
      queues: [new BullMQAdapter(queue, { readOnlyMode: true })],
      // @bull-board/fastify 9.10.1 pins its own @bull-board/api 9.10.1 beside our 9.10.2; the
      // two copies differ only in private members, so the adapter fits at run time.
      serverAdapter: serverAdapter as unknown as BoardArgs['serverAdapter'],
      options: { uiConfig: { boardTitle: 'lorafleet' } },
    });
    // This hook lives in the plugin's own scope (no fastify-plugin), so it guards only the board.
    scope.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
      const password = basicAuthPassword(request.headers.authorization);
      let isAdmin = false;
      try {
        // Fleet admins only: the board shows every tenant's jobs and payloads.
        isAdmin =
          password !== null && (await apiKeys.authenticate(password))?.isFleetAdmin === true;
      } catch {
        return reply
          .code(503)
          .send(openAiError('service_unavailable', 'Cannot check credentials; retry shortly.'));
      }
      if (!isAdmin) {
        return reply
          .code(401)
          .header('WWW-Authenticate', REALM)
          .send(
            openAiError(
              'invalid_api_key',
              'The queue board needs HTTP Basic auth with a fleet admin API key as the password.',
            ),
          );
      }
    });
    await scope.register(serverAdapter.registerPlugin(), { prefix: BULL_BOARD_PATH });
  };
}
