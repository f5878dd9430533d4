import { createHash } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';

/**
 * Weak ETag over the JSON body; a matching If-None-Match answers 304 with no body, so a
 * dashboard polling an unchanged job costs one indexed read and no payload.
 */
export function withEtag<T>(request: FastifyRequest, reply: FastifyReply, body: T): T | undefined {
  const etag = `W/"${createHash('sha1').update(JSON.stringify(body)).digest('base64url')}"`;
  void reply.header('ETag', etag).header('Cache-Control', 'no-cache');
  const ifNoneMatch = request.headers['if-none-match'];
  if (
    ifNoneMatch &&
    ifNoneMatch.split(',').some((tag) => tag.trim() === etag || tag.trim() === '*')
  ) {
    void reply.status(304);
    return undefined;
  }
  return body;
}
