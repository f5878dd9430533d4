/**
 * ServingProcess with the real serving child (the built apps/worker dist, cpu backend) on the
 * shipped tiny GPT-2: what a request gets back when all goes well, and when the base cannot
 * load, differs from the API's, or its adapter is gone. Redis and Postgres stay out: the
 * handlers stand in for the consumer service, as the child only speaks IPC.
 */
import type { ServeReply, ServeRequest } from '@lorafleet/contracts';
import { hashBaseModel } from '@lorafleet/data';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ServingProcess } from '../src/serving/serving-process';

jest.setTimeout(60_000);

const REPO_ROOT = path.resolve(__dirname, '../../..');
const CHILD = path.join(REPO_ROOT, 'apps/worker/dist/serving/serving-child.js');
const MODEL_DIR = path.join(REPO_ROOT, 'models/tiny-random-gpt2');
/** tiny-random-gpt2's key/value cache per token: 2 layers × (K, V) × 2 heads × 16 × 4 bytes. */
const KV_BYTES_PER_TOKEN = 2 * 2 * 2 * 16 * 4;
/** The children's cache budget, in tokens of one request (its context is 64). */
const KV_CACHE_TOKENS = 16;

interface Run {
  replies: ServeReply[];
  process: ServingProcess;
  adaptersAsked: string[];
  exited: Promise<string>;
}

function start(
  modelDir: string,
): Omit<Run, 'replies'> & { wait(id: string): Promise<ServeReply[]> } {
  const byRequest = new Map<string, ServeReply[]>();
  const waiters = new Map<string, () => void>();
  const adaptersAsked: string[] = [];
  let exited!: (reason: string) => void;
  const process = new ServingProcess(
    {
      baseModel: 'tiny',
      modelDir,
      backend: 'cpu',
      adapterCacheBytes: 1 << 20,
      maxBatchSize: 4,
      kvCacheBytes: KV_CACHE_TOKENS * KV_BYTES_PER_TOKEN,
    },
    {
      adapter: (adapterId) => {
        adaptersAsked.push(adapterId);
        return Promise.resolve({ adapterId, missing: `adapter ${adapterId} no longer exists` });
      },
      replies: (replies) => {
        for (const { requestId, reply } of replies) {
          byRequest.set(requestId, [...(byRequest.get(requestId) ?? []), reply]);
          if (reply.kind !== 'delta') waiters.get(requestId)?.();
        }
      },
      exited: (reason) => exited(reason),
    },
    CHILD,
  );
  return {
    process,
    adaptersAsked,
    exited: new Promise((resolve) => (exited = resolve)),
    wait: (id) =>
      new Promise((resolve) => {
        const done = () => resolve(byRequest.get(id) ?? []);
        const held = byRequest.get(id) ?? [];
        if (held.some((r) => r.kind !== 'delta')) done();
        else waiters.set(id, done);
      }),
  };
}

function request(id: string, patch: Partial<ServeRequest> = {}): ServeRequest {
  return {
    schemaVersion: 1,
    requestId: id,
    tenantId: 'org-1',
    baseModel: 'tiny',
    baseModelHash: '',
    adapterId: null,
    promptIds: [1, 2, 3],
    maxTokens: 5,
    temperature: 0,
    topP: 1,
    stop: [],
    seed: null,
    deadline: Date.now() + 60_000,
    ...patch,
  };
}

describe('ServingProcess with the real serving child', () => {
  let hash: string;
  beforeAll(async () => {
    if (!existsSync(CHILD)) throw new Error(`${CHILD} is missing: run "npm run build" first`);
    hash = (await hashBaseModel(MODEL_DIR)).sha256;
  });

  it("answers requests, refuses a base that differs from the API's, a deleted adapter, and a request over the cache budget", async () => {
    const run = start(MODEL_DIR);
    try {
      run.process.submit(request('ok', { baseModelHash: hash }));
      // 3 prompt + 20 tokens: more than the 16 tokens of cache the child may hold.
      run.process.submit(request('too-long', { baseModelHash: hash, maxTokens: 20 }));
      run.process.submit(request('other-base', { baseModelHash: 'f'.repeat(64) }));
      run.process.submit(request('gone', { baseModelHash: hash, adapterId: 'adapter-x' }));
      const ok = await run.wait('ok');
      expect(ok.at(-1)).toEqual({
        kind: 'done',
        finishReason: expect.stringMatching(/^(stop|length)$/) as string,
        usage: expect.objectContaining({ promptTokens: 3 }) as object,
      });
      const done = ok.at(-1) as Extract<ServeReply, { kind: 'done' }>;
      // Every delta's tokens are tokens the usage counts.
      const streamed = ok.filter((r) => r.kind === 'delta').reduce((n, r) => n + r.tokens, 0);
      expect(streamed).toBeLessThanOrEqual(done.usage.completionTokens);
      expect(done.usage.completionTokens).toBeGreaterThan(0);

      expect(await run.wait('other-base')).toEqual([
        {
          kind: 'error',
          code: 'service_unavailable',
          message: expect.stringContaining('differs on this worker') as string,
          param: 'model',
        },
      ]);
      expect(await run.wait('gone')).toEqual([
        {
          kind: 'error',
          code: 'model_not_found',
          message: 'adapter adapter-x no longer exists',
          param: 'model',
        },
      ]);
      expect(await run.wait('too-long')).toEqual([
        {
          kind: 'error',
          code: 'invalid_request',
          message: expect.stringMatching(
            /too large for the server's key\/value cache: .*max_tokens at most 13 with this prompt/,
          ) as string,
          param: 'max_tokens',
        },
      ]);
      expect(run.adaptersAsked).toEqual(['adapter-x']);
      expect(run.process.load).toBe(0);
    } finally {
      run.process.kill('test over');
      await run.exited;
    }
  });

  it('fails the requests of a base that cannot load, naming why, and exits', async () => {
    const empty = mkdtempSync(path.join(tmpdir(), 'lf-serving-'));
    try {
      const run = start(empty);
      run.process.submit(request('r1', { baseModelHash: hash }));
      const [reply] = await run.wait('r1');
      expect(reply).toMatchObject({
        kind: 'error',
        code: 'service_unavailable',
        message: 'the base model could not be loaded: Base model at "tiny" has no config.json',
      });
      expect(await run.exited).toMatch(/^the base model could not be loaded/);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});
