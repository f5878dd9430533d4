import type { ServeReply, ServeRequest } from '@lorafleet/contracts';

/**
 * Messages between a serving worker's parent and its serving child (fork IPC, `advanced`
 * serialization so adapter bytes travel as they are). One child per loaded base model owns
 * tfjs, the model, the adapter cache and the batching engine; the parent owns Redis and
 * Postgres, so its event loop never runs a decode step (DESIGN §1, issue 19).
 */
export interface ServingChildSpec {
  baseModel: string;
  modelDir: string;
  /** LORAFLEET_BACKEND as configured on the worker. */
  backend: string;
  adapterCacheBytes: number;
  maxBatchSize: number;
  /** The decode batch's key/value cache budget; null: a quarter of the memory limit. */
  kvCacheBytes: number | null;
}

/** An adapter as stored in Postgres, or why it cannot be had. */
export type AdapterAnswer =
  | {
      adapterId: string;
      adapterConfig: unknown;
      safetensors: Uint8Array;
      baseModelSha256: string | null;
    }
  | { adapterId: string; missing: string };

export type ParentToServingChild =
  | { kind: 'init'; spec: ServingChildSpec }
  | { kind: 'request'; request: ServeRequest }
  | { kind: 'adapter'; answer: AdapterAnswer }
  | { kind: 'cancel'; requestId: string };

export type ServingChildToParent =
  /** The base is loaded (after its content hash was computed); `backend` as tfjs reports it. */
  | { kind: 'ready'; backend: string; baseModelHash: string }
  /** Loading the base failed: every request for it fails with this. */
  | { kind: 'init-failed'; message: string }
  /** The child needs adapter `adapterId` from Postgres. */
  | { kind: 'need-adapter'; adapterId: string }
  /** What one scheduling round produced: at most one delta per request, then its end. */
  | { kind: 'replies'; replies: { requestId: string; reply: ServeReply }[] };
