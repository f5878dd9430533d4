import { createHash } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';

/**
 * Weak ETag over the JSON body; a matching If-None-Match answers 304 with no body, so a
 * dashboard polling an unchanged job costs one indexed read and no payload. The body is
 * serialised once, for the tag and the answer alike (hence the string return).
 */
export function withEtag(
  request: FastifyRequest,
  reply: FastifyReply,
  body: unknown,
): string | undefined {
  const json = JSON.stringify(body);
  const etag = `W/"${createHash('sha1').update(json).digest('base64url')}"`;
  void reply.header('ETag', etag).header('Cache-Control', 'no-cache');
  const ifNoneMatch = request.headers['if-none-match'];
  if (
    ifNoneMatch &&
    ifNoneMatch.split(',').some((tag) => tag.trim() === etag || tag.trim() === '*')
  ) {
    void reply.status(304);
    return undefined;
  }
  void reply.type('application/json; charset=utf-8');
  return json;
}
