import { Inject, Injectable } from '@nestjs/common';
import type { ApiEnv } from '@lorafleet/contracts';
import {
  BaseModelHashError,
  ModelFactsError,
  ModelNotFoundError,
  hashBaseModel,
  listBaseModels,
  readModelFacts,
  resolveBaseModel,
  type BaseModelEntry,
  type ModelFacts,
} from '@lorafleet/data';
import type { AdapterEntity } from '@lorafleet/db';
import { API_ENV } from '../config/api-env.token';
import { ApiError } from '../errors/api-error';

export interface ModelObject {
  id: string;
  object: 'model';
  created: number;
  owned_by: string;
  /** Fine-tuned models only: the base model the adapter applies to (as vLLM lists adapters). */
  parent?: string;
  /** lorafleet extensions, base models only: config.json facts (null when it is unusable). */
  architecture?: string | null;
  parameters?: number | null;
  context_length?: number | null;
}

/** Base models are directories under LORAFLEET_MODELS_DIR (Hugging Face layout). */
@Injectable()
export class ModelsService {
  constructor(@Inject(API_ENV) private readonly env: ApiEnv) {}

  listBaseModels(): ModelObject[] {
    return listBaseModels(this.env.LORAFLEET_MODELS_DIR).map((m) => this.present(m));
  }

  /** Throws an OpenAI-shaped 404 naming `param` when the model is unknown or unsafe. */
  resolve(name: string, param = 'model'): BaseModelEntry {
    try {
      return resolveBaseModel(this.env.LORAFLEET_MODELS_DIR, name);
    } catch (error) {
      if (error instanceof ModelNotFoundError) throw new ApiError('model_not_found', error.message, param);
      throw error;
    }
  }

  /**
   * The base model's content hash (config, weights, tokenizer), recorded on a new job so the
   * worker trains on exactly this base. Hashed once per directory and cached while its files
   * are unchanged; an incomplete directory is a 404 naming `param`.
   */
  async contentHash(model: BaseModelEntry, param = 'model'): Promise<string> {
    try {
      return (await hashBaseModel(model.dir)).sha256;
    } catch (error) {
      if (error instanceof BaseModelHashError) {
        throw new ApiError(
          'model_not_found',
          // `reason`, not `message`: the message holds the server's directory.
          `Model ${JSON.stringify(model.name)} is incomplete: ${error.reason}`,
          param,
        );
      }
      throw error;
    }
  }

  /**
   * Context length and module names from the model's config.json (libs/data; no tfjs), to
   * check a job against before it is queued. An architecture lorafleet cannot train is a 400
   * naming `param`.
   */
  facts(model: BaseModelEntry, param = 'model'): ModelFacts {
    try {
      return readModelFacts(model.dir);
    } catch (error) {
      if (error instanceof ModelFactsError) {
        throw new ApiError(
          'invalid_request',
          `Model ${JSON.stringify(model.name)} cannot be fine-tuned: ${error.message}`,
          param,
        );
      }
      throw error;
    }
  }

  presentFineTuned(adapter: AdapterEntity): ModelObject {
    return {
      id: adapter.fineTunedModel,
      object: 'model',
      created: Math.floor(adapter.createdAt.getTime() / 1000),
      owned_by: adapter.tenantId,
      parent: adapter.baseModel,
    };
  }

  present(model: BaseModelEntry): ModelObject {
    // A directory lorafleet cannot train still lists (a job on it is refused at create); its
    // facts are null rather than failing the whole list.
    let facts: ModelFacts | null = null;
    try {
      facts = readModelFacts(model.dir);
    } catch (error) {
      if (!(error instanceof ModelFactsError)) throw error;
    }
    return {
      id: model.name,
      object: 'model',
      created: Math.floor(model.createdAt.getTime() / 1000),
      owned_by: 'lorafleet',
      architecture: facts?.modelType ?? null,
      parameters: facts?.parameters ?? null,
      context_length: facts?.contextLength ?? null,
    };
  }
}
