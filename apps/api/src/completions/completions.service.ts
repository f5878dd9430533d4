import { Inject, Injectable } from '@nestjs/common';
import {
  type ApiEnv,
  ChatCompletionRequestSchema,
  CompletionRequestSchema,
  DEFAULT_COMPLETION_MAX_TOKENS,
  type ChatCompletionRequest,
  type CompletionRequest,
  type ServeReply,
  type ServeRequest,
} from '@lorafleet/contracts';
import {
  encodeChatPrompt,
  encodeTextPrompt,
  loadTokenizer,
  type BaseModelEntry,
  type TextTokenizer,
} from '@lorafleet/data';
import { randomBytes } from 'node:crypto';
import { AdaptersService } from '../adapters/adapters.service';
import { API_ENV } from '../config/api-env.token';
import { ApiError } from '../errors/api-error';
import { ModelsService } from '../models/models.service';
import { ServingGateway } from './serving.gateway';

/** A validated request ready for a worker, with what the response needs to echo. */
export interface PreparedCompletion {
  /** The `model` the client asked for (a base name or an `ft:` name). */
  model: string;
  serve: ServeRequest;
  stream: boolean;
  includeUsage: boolean;
}

/**
 * `POST /v1/chat/completions` and `POST /v1/completions` (issue 19): resolves the model under
 * the tenant, renders and tokenizes the prompt here (libs/data, no tfjs), and hands prompt ids
 * to a serving worker through `ServingGateway`. The API never runs a model.
 */
@Injectable()
export class CompletionsService {
  /** Tokenizers by base content hash: a changed model directory loads afresh. */
  private readonly tokenizers = new Map<string, Promise<TextTokenizer>>();

  constructor(
    @Inject(API_ENV) private readonly env: ApiEnv,
    private readonly models: ModelsService,
    private readonly adapters: AdaptersService,
    private readonly gateway: ServingGateway,
  ) {}

  prepareChat(tenantId: string, body: unknown): Promise<PreparedCompletion> {
    const request: ChatCompletionRequest = ChatCompletionRequestSchema.parse(body);
    return this.prepare(tenantId, request, {
      maxTokens: request.max_completion_tokens ?? request.max_tokens,
      maxTokensParam:
        request.max_completion_tokens != null ? 'max_completion_tokens' : 'max_tokens',
      promptParam: 'messages',
      encode: (tokenizer) => encodeChatPrompt(request.messages, tokenizer),
    });
  }

  prepareText(tenantId: string, body: unknown): Promise<PreparedCompletion> {
    const request: CompletionRequest = CompletionRequestSchema.parse(body);
    const { prompt } = request;
    return this.prepare(tenantId, request, {
      maxTokens: request.max_tokens,
      defaultMaxTokens: DEFAULT_COMPLETION_MAX_TOKENS,
      maxTokensParam: 'max_tokens',
      promptParam: 'prompt',
      encode: (tokenizer) => {
        if (typeof prompt === 'string') return encodeTextPrompt(prompt, tokenizer);
        const outside = prompt.find((id) => id >= tokenizer.vocabSize);
        if (outside !== undefined) {
          throw new ApiError(
            'invalid_request',
            `prompt token id ${outside} is outside the vocabulary (0..${tokenizer.vocabSize - 1})`,
            'prompt',
          );
        }
        return prompt;
      },
    });
  }

  /** Sends the request to a serving worker; its replies follow from `replies`. */
  enqueue(prepared: PreparedCompletion): Promise<void> {
    return this.gateway.enqueue(prepared.serve);
  }

  replies(prepared: PreparedCompletion, signal: AbortSignal): AsyncGenerator<ServeReply> {
    return this.gateway.replies(prepared.serve.requestId, signal);
  }

  private async prepare(
    tenantId: string,
    request: ChatCompletionRequest | CompletionRequest,
    prompt: {
      maxTokens: number | null | undefined;
      /** Without one, the completion may fill the context. */
      defaultMaxTokens?: number;
      maxTokensParam: string;
      promptParam: string;
      encode: (tokenizer: TextTokenizer) => number[];
    },
  ): Promise<PreparedCompletion> {
    const { base, adapterId } = await this.resolveModel(tenantId, request.model);
    const baseModelHash = await this.models.contentHash(base);
    const tokenizer = await this.tokenizer(base, baseModelHash);
    const contextLength = this.models.facts(base).contextLength;
    const promptIds = prompt.encode(tokenizer);
    const room = contextLength - promptIds.length;
    if (room < 1) {
      throw new ApiError(
        'invalid_request',
        `This model's maximum context length is ${contextLength} tokens; the ${prompt.promptParam} is ${promptIds.length} tokens, leaving none to generate.`,
        prompt.promptParam,
      );
    }
    if (prompt.maxTokens != null && prompt.maxTokens > room) {
      // As OpenAI does: an explicit limit that cannot fit is the caller's to fix.
      throw new ApiError(
        'invalid_request',
        `This model's maximum context length is ${contextLength} tokens. However, you requested ${promptIds.length + prompt.maxTokens} tokens (${promptIds.length} in the ${prompt.promptParam}, ${prompt.maxTokens} for the completion).`,
        prompt.maxTokensParam,
      );
    }
    return {
      model: request.model,
      stream: request.stream === true,
      includeUsage: request.stream_options?.include_usage === true,
      serve: {
        schemaVersion: 1,
        requestId: randomBytes(12).toString('hex'),
        tenantId,
        baseModel: base.name,
        baseModelHash,
        adapterId,
        promptIds,
        maxTokens: Math.min(prompt.maxTokens ?? prompt.defaultMaxTokens ?? room, room),
        temperature: request.temperature ?? 1,
        topP: request.top_p ?? 1,
        stop: request.stop,
        seed: request.seed ?? null,
        // When the gateway stops waiting for a first token: a worker drops it unstarted after.
        deadline: Date.now() + this.env.LORAFLEET_SERVE_FIRST_TOKEN_TIMEOUT_MS,
      },
    };
  }

  /** A base model name, or this tenant's `ft:` model (another tenant's is a 404, as OpenAI). */
  private async resolveModel(
    tenantId: string,
    model: string,
  ): Promise<{ base: BaseModelEntry; adapterId: string | null }> {
    if (!model.startsWith('ft:')) return { base: this.models.resolve(model), adapterId: null };
    const adapter = await this.adapters.findByFineTunedModel(tenantId, model);
    if (!adapter) {
      throw new ApiError(
        'model_not_found',
        `The model ${JSON.stringify(model)} does not exist`,
        'model',
      );
    }
    return { base: this.models.resolve(adapter.baseModel), adapterId: adapter.id };
  }

  private tokenizer(base: BaseModelEntry, hash: string): Promise<TextTokenizer> {
    let tokenizer = this.tokenizers.get(hash);
    if (!tokenizer) {
      tokenizer = loadTokenizer(base.dir);
      // A failed load is not kept: the next request tries again.
      tokenizer.catch(() => this.tokenizers.delete(hash));
      this.tokenizers.set(hash, tokenizer);
    }
    return tokenizer;
  }
}
