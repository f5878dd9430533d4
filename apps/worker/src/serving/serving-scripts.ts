/**
 * Lua scripts of the serving takeover (ADR 0006, "Worker death"). Each runs atomically in
 * Redis, which is what makes "exactly one worker answers a request" hold: a worker's first
 * reply and another worker's XAUTOCLAIM of the same entry cannot interleave.
 */

/**
 * Writes a request's first replies only while this worker still holds its request entry in
 * the consumer group's pending list, and acknowledges the entry in the same step: from its
 * first reply on, a request is out of the pending list, so no other worker can claim and
 * re-run it (its text would repeat), and a worker whose entry was claimed writes nothing.
 * KEYS: request stream, reply stream. ARGV: group, consumer, entry id, maxlen, ttl, replies…
 * Returns 1 when written, 0 when the entry is no longer this worker's.
 */
export const FIRST_REPLIES_LUA = `
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2]) == 0 then
  return 0
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
for i = 6, #ARGV do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'reply', ARGV[i])
end
redis.call('EXPIRE', KEYS[2], ARGV[5])
return 1`;

/**
 * The heartbeat: resets the idle time of each entry this worker still holds (XCLAIM to itself,
 * JUSTID, which leaves the delivery count alone) so that no other worker claims it however
 * long its base load, adapter fetch, queueing or prefill takes. An entry another worker has
 * claimed is left alone (a plain XCLAIM would take it back) and returned.
 * KEYS: request stream. ARGV: group, consumer, entry ids…
 */
export const HEARTBEAT_LUA = `
local lost = {}
for i = 3, #ARGV do
  if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2]) == 0 then
    lost[#lost + 1] = ARGV[i]
  else
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  end
end
return lost`;
