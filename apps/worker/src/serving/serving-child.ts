/**
 * Serving child process (issue 19): owns tfjs and one base model, loaded on the first
 * request, never at boot. Adapters come from Postgres through the parent on first use and stay
 * in lora-core's `AdapterRegistry` (LRU by bytes, base weights hash checked); requests for
 * any of them are decoded together by `CompletionEngine`. It exits when the IPC channel
 * closes, so it never outlives its worker.
 */
import type { ServeReply, ServeRequest } from '@lorafleet/contracts';
import { hashBaseModel, loadTokenizer, type TextTokenizer } from '@lorafleet/data';
import {
  AdapterRegistry,
  AdapterRegistryError,
  CompletionCancelledError,
  CompletionEngine,
  KvCacheBudgetError,
  loadCausalLM,
  memoryLimitMbFromEnv,
  selectBackend,
  type AdapterSource,
} from '@lorafleet/lora-core';
import type {
  AdapterAnswer,
  ParentToServingChild,
  ServingChildSpec,
  ServingChildToParent,
} from './serving-protocol';

process.on('disconnect', () => process.exit(1));

/** Share of the memory limit the decode batch's key/value cache may take by default. */
const KV_CACHE_SHARE_OF_MEMORY_LIMIT = 0.25;

/** Resolves once the message is handed to the IPC channel, so exiting after it loses nothing. */
function send(message: ServingChildToParent): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) resolve();
    else process.send(message, undefined, {}, () => resolve());
  });
}

interface Loaded {
  engine: CompletionEngine;
  registry: AdapterRegistry;
  tokenizer: TextTokenizer;
  baseModelHash: string;
}

let loaded: Promise<Loaded> | undefined;
/** Replies of the current round, sent together after it. */
let outbox: { requestId: string; reply: ServeReply }[] = [];
const adapterWaiters = new Map<string, (answer: AdapterAnswer) => void>();
let stepping = false;

async function load(spec: ServingChildSpec): Promise<Loaded> {
  const backend = await selectBackend(spec.backend);
  const { sha256 } = await hashBaseModel(spec.modelDir);
  const model = await loadCausalLM(spec.modelDir);
  const tokenizer = await loadTokenizer(spec.modelDir);
  const registry = new AdapterRegistry(model, { maxBytes: spec.adapterCacheBytes });
  const engine = new CompletionEngine(model, {
    registry,
    tokenizer,
    maxBatchSize: spec.maxBatchSize,
    kvCacheBytes:
      spec.kvCacheBytes ??
      Math.floor(memoryLimitMbFromEnv() * 2 ** 20 * KV_CACHE_SHARE_OF_MEMORY_LIMIT),
  });
  void send({ kind: 'ready', backend, baseModelHash: sha256 });
  return { engine, registry, tokenizer, baseModelHash: sha256 };
}

function reply(requestId: string, message: ServeReply): void {
  outbox.push({ requestId, reply: message });
}

function flush(): void {
  if (outbox.length === 0) return;
  void send({ kind: 'replies', replies: outbox });
  outbox = [];
}

/** An error reply in OpenAI's terms: what the client did wrong, or what the server could not. */
function errorReply(error: unknown): ServeReply {
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof AdapterRegistryError) {
    // Deleted since the API resolved the name: as if it never existed.
    if (error.code === 'unknown_adapter') {
      return { kind: 'error', code: 'model_not_found', message, param: 'model' };
    }
    // A base mismatch or a cache too small for the adapter: not the client's doing.
    return { kind: 'error', code: 'service_unavailable', message, param: 'model' };
  }
  if (error instanceof KvCacheBudgetError) {
    // The client can fix it: fewer tokens. Larger than the whole budget, it would never run.
    return {
      kind: 'error',
      code: 'invalid_request',
      message: `This request is too large for the server's key/value cache: ${message}.`,
      param: 'max_tokens',
    };
  }
  if (error instanceof CompletionCancelledError) {
    // Nobody reads it (the client is gone); it ends the request for the parent's bookkeeping.
    return { kind: 'error', code: 'invalid_request', message: error.message, param: null };
  }
  if (error instanceof RangeError)
    return { kind: 'error', code: 'invalid_request', message, param: null };
  return { kind: 'error', code: 'internal_error', message, param: null };
}

function fetchAdapter(adapterId: string): Promise<AdapterSource> {
  return new Promise((resolve, reject) => {
    adapterWaiters.set(adapterId, (answer) => {
      if ('missing' in answer) reject(new AdapterRegistryError(answer.missing, 'unknown_adapter'));
      else resolve(answer);
    });
    void send({ kind: 'need-adapter', adapterId });
  });
}

async function serve(request: ServeRequest): Promise<void> {
  let state: Loaded;
  try {
    state = await loaded!;
  } catch {
    // The parent fails every request of this child with the load failure (`init-failed`).
    return;
  }
  const { engine, registry, baseModelHash } = state;
  if (baseModelHash !== request.baseModelHash) {
    // DESIGN §6: the API resolved the model against files this worker does not have.
    reply(request.requestId, {
      kind: 'error',
      code: 'service_unavailable',
      message: `base model "${request.baseModel}" differs on this worker: the API saw sha256 ${request.baseModelHash}, the worker has ${baseModelHash}`,
      param: 'model',
    });
    return;
  }
  if (request.adapterId !== null)
    await registry.load(request.adapterId, () => fetchAdapter(request.adapterId!));
  const done = engine.submit(
    {
      id: request.requestId,
      promptIds: request.promptIds,
      adapterId: request.adapterId,
      maxTokens: request.maxTokens,
      temperature: request.temperature,
      topP: request.topP,
      stop: request.stop,
      ...(request.seed === null ? {} : { seed: request.seed }),
    },
    // The engine reports each token; a delta is sent only when text became final, with the
    // tokens it covers (usage is counted from the final entry, not from these).
    (() => {
      let pendingTokens = 0;
      return (delta) => {
        pendingTokens += 1;
        if (delta.text === '') return;
        reply(request.requestId, { kind: 'delta', text: delta.text, tokens: pendingTokens });
        pendingTokens = 0;
      };
    })(),
  );
  void runRounds();
  const result = await done;
  reply(request.requestId, {
    kind: 'done',
    finishReason: result.finishReason,
    usage: result.usage,
  });
}

/** Steps the engine while it has work, yielding to IPC between rounds so requests join. */
async function runRounds(): Promise<void> {
  if (stepping || !loaded) return;
  stepping = true;
  try {
    const { engine } = await loaded;
    for (;;) {
      await engine.step();
      // Requests that finished this round settle in the microtasks that ran before here;
      // one more turn lets their `done` replies join the same message, and lets requests
      // that arrived over IPC meanwhile join the next round.
      await new Promise((resolve) => setImmediate(resolve));
      flush();
      // Checked after the turn: a request submitted during it must not be left unstepped.
      if (engine.running + engine.waiting === 0) break;
    }
  } finally {
    stepping = false;
  }
}

process.on('message', (message: ParentToServingChild) => {
  switch (message.kind) {
    case 'init':
      loaded = load(message.spec);
      loaded.catch((error: unknown) => {
        // Clients read this: it names the model, not the server's directory.
        const { modelDir, baseModel } = message.spec;
        const text = (error instanceof Error ? error.message : String(error))
          .split(modelDir)
          .join(`"${baseModel}"`);
        return send({ kind: 'init-failed', message: text }).then(() => process.exit(1));
      });
      break;
    case 'request':
      serve(message.request).catch((error: unknown) => {
        reply(message.request.requestId, errorReply(error));
        flush();
      });
      break;
    case 'adapter':
      adapterWaiters.get(message.answer.adapterId)?.(message.answer);
      adapterWaiters.delete(message.answer.adapterId);
      break;
    case 'cancel':
      void loaded?.then(({ engine }) => engine.cancel(message.requestId));
      break;
  }
});
