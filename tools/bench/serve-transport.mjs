// The transport alone, no model (ADR 0006, "What must be measured" item 4): one request and
// its tokens through Redis Streams as lorafleet serves them, against the same through BullMQ,
// the baseline the ADR rejects. Both sides run in this process against one Redis, one request
// at a time, and the "worker" sends its tokens as fast as it can (a decode step costs nothing
// here), so the figures are the transport's own latency per request and per token.
//   Redis Streams: XADD request → XREADGROUP (BLOCK) → one XADD per token, then a final entry
//                  → the requester's XREAD (BLOCK) on its reply stream, as serving.gateway does.
//   BullMQ:        Queue.add → Worker processor → job.updateProgress per token, then the
//                  processor's return value → QueueEvents 'progress' / 'completed'.
import { randomBytes } from 'node:crypto';
import { percentile } from './bench-helpers.mjs';

const summary = (values) => ({ p50: percentile(values, 50), p99: percentile(values, 99) });

/** Sequential round trips over Redis Streams: first token and whole request, ms. */
async function redisStreams(Redis, redisUrl, prefix, requests, tokens) {
  const requestStream = `${prefix}:req`;
  const group = `${prefix}:group`;
  const consumer = new Redis(redisUrl);
  const requester = new Redis(redisUrl);
  const commands = new Redis(redisUrl);
  await commands.xgroup('CREATE', requestStream, group, '0', 'MKSTREAM');
  let running = true;
  const serving = (async () => {
    while (running) {
      const read = await consumer.xreadgroup(
        'GROUP',
        group,
        'bench',
        'COUNT',
        16,
        'BLOCK',
        200,
        'STREAMS',
        requestStream,
        '>',
      );
      for (const [, entries] of read ?? []) {
        for (const [entryId, fields] of entries) {
          const { requestId } = JSON.parse(fields[1]);
          const replies = `${prefix}:tok:${requestId}`;
          for (let t = 0; t < tokens; t++) {
            await consumer.xadd(replies, '*', 'reply', JSON.stringify({ kind: 'delta', t }));
          }
          await consumer.xadd(replies, '*', 'reply', JSON.stringify({ kind: 'done' }));
          await consumer.xack(requestStream, group, entryId);
        }
      }
    }
  })();
  const firstToken = [];
  const whole = [];
  try {
    for (let i = 0; i < requests; i++) {
      const requestId = `r${i}`;
      const replies = `${prefix}:tok:${requestId}`;
      const started = performance.now();
      await commands.xadd(requestStream, '*', 'request', JSON.stringify({ requestId }));
      let cursor = '0';
      let first;
      for (let done = false; !done;) {
        const read = await requester.xread('BLOCK', 5000, 'STREAMS', replies, cursor);
        if (read === null) throw new Error(`no reply for ${requestId} within 5 s`);
        for (const [entryId, fields] of read[0][1]) {
          cursor = entryId;
          first ??= performance.now();
          if (JSON.parse(fields[1]).kind === 'done') done = true;
        }
      }
      const ended = performance.now();
      await commands.del(replies);
      if (i === 0) continue; // warm-up
      firstToken.push(first - started);
      whole.push(ended - started);
    }
  } finally {
    running = false;
    await serving;
    await commands.del(requestStream);
    for (const client of [consumer, requester, commands]) client.disconnect();
  }
  return { firstTokenMs: summary(firstToken), requestMs: summary(whole) };
}

/** Sequential round trips through BullMQ: first token (progress event) and completion, ms. */
async function bullmq({ Queue, Worker, QueueEvents }, redisUrl, prefix, requests, tokens) {
  const connection = { url: redisUrl, maxRetriesPerRequest: null };
  const name = 'serve-baseline';
  const queue = new Queue(name, { connection, prefix });
  const events = new QueueEvents(name, { connection, prefix });
  const worker = new Worker(
    name,
    async (job) => {
      for (let t = 0; t < tokens; t++) await job.updateProgress({ t });
      return { kind: 'done' };
    },
    { connection, prefix, concurrency: 16 },
  );
  await Promise.all([queue.waitUntilReady(), events.waitUntilReady(), worker.waitUntilReady()]);
  const firstToken = [];
  const whole = [];
  try {
    for (let i = 0; i < requests; i++) {
      const jobId = `r${i}`;
      const started = performance.now();
      let first;
      const completed = new Promise((resolve, reject) => {
        const onProgress = ({ jobId: id }) => {
          if (id === jobId) first ??= performance.now();
        };
        const onCompleted = ({ jobId: id }) => {
          if (id !== jobId) return;
          events.off('progress', onProgress);
          events.off('completed', onCompleted);
          resolve(performance.now());
        };
        events.on('progress', onProgress);
        events.on('completed', onCompleted);
        setTimeout(() => reject(new Error(`no completion for ${jobId} within 5 s`)), 5000).unref();
      });
      await queue.add('request', { requestId: jobId }, { jobId, removeOnComplete: true });
      const ended = await completed;
      if (i === 0) continue; // warm-up
      firstToken.push(first - started);
      whole.push(ended - started);
    }
  } finally {
    await worker.close();
    await events.close();
    await queue.obliterate({ force: true });
    await queue.close();
  }
  return { firstTokenMs: summary(firstToken), requestMs: summary(whole) };
}

/** Both transports on the Redis at `redisUrl`, `requests` sequential requests of `tokens` tokens. */
export async function transportBaseline(require, redisUrl, requests, tokens) {
  const { Redis } = require('ioredis');
  const prefix = `lf-bench-transport-${randomBytes(4).toString('hex')}`;
  const streams = await redisStreams(Redis, redisUrl, prefix, requests + 1, tokens);
  const queue = await bullmq(require('bullmq'), redisUrl, prefix, requests + 1, tokens);
  return { requests, tokens, redisStreams: streams, bullmq: queue };
}
