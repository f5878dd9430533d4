import { Body, Controller, HttpCode, Post, Req, Res, UseGuards } from '@nestjs/common';
import { ERROR_CODES, openAiError, type ErrorCode, type ServeReply } from '@lorafleet/contracts';
import type { AuthenticatedPrincipal } from '@lorafleet/db';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ApiKeyGuard } from '../auth/api-key.guard';
import { Principal } from '../auth/principal.decorator';
import { ApiError } from '../errors/api-error';
import { CompletionsService, type PreparedCompletion } from './completions.service';

type Usage = { prompt_tokens: number; completion_tokens: number; total_tokens: number };

/** The two OpenAI endpoints differ only in object names and where text goes in a choice. */
interface Shape {
  idPrefix: string;
  object: string;
  chunkObject: string;
  /** A choice holding `text` (non-streamed: the whole answer; streamed: a delta). */
  choice(
    text: string | null,
    finishReason: string | null,
    streamed: boolean,
    first: boolean,
  ): object;
}

const CHAT: Shape = {
  idPrefix: 'chatcmpl-',
  object: 'chat.completion',
  chunkObject: 'chat.completion.chunk',
  choice: (text, finishReason, streamed, first) => ({
    index: 0,
    ...(streamed
      ? {
          delta:
            text === null ? {} : first ? { role: 'assistant', content: text } : { content: text },
        }
      : { message: { role: 'assistant', content: text, refusal: null } }),
    logprobs: null,
    finish_reason: finishReason,
  }),
};

const TEXT: Shape = {
  idPrefix: 'cmpl-',
  object: 'text_completion',
  chunkObject: 'text_completion',
  choice: (text, finishReason) => ({
    index: 0,
    text: text ?? '',
    logprobs: null,
    finish_reason: finishReason,
  }),
};

function usageOf(reply: Extract<ServeReply, { kind: 'done' }>): Usage {
  return {
    prompt_tokens: reply.usage.promptTokens,
    completion_tokens: reply.usage.completionTokens,
    total_tokens: reply.usage.totalTokens,
  };
}

/** A worker's error reply as the API error it stands for. */
function replyError(reply: Extract<ServeReply, { kind: 'error' }>): ApiError {
  const code: ErrorCode = reply.code in ERROR_CODES ? (reply.code as ErrorCode) : 'internal_error';
  return new ApiError(code, reply.message, reply.param);
}

/**
 * OpenAI's completion endpoints (issue 19), served by workers over Redis. Bad input is a 400
 * before anything is queued; with `stream: true` the answer is server-sent events, and a
 * failure after the first byte is an `error` event, as OpenAI's clients expect.
 */
@Controller('v1')
@UseGuards(ApiKeyGuard)
export class CompletionsController {
  constructor(private readonly completions: CompletionsService) {}

  @Post('chat/completions')
  @HttpCode(200)
  async chat(
    @Principal() principal: AuthenticatedPrincipal,
    @Body() body: unknown,
    @Req() request: FastifyRequest,
    @Res({ passthrough: true }) reply: FastifyReply,
  ): Promise<object | undefined> {
    const prepared = await this.completions.prepareChat(principal.tenantId, body);
    return this.answer(prepared, CHAT, request, reply);
  }

  @Post('completions')
  @HttpCode(200)
  async text(
    @Principal() principal: AuthenticatedPrincipal,
    @Body() body: unknown,
    @Req() request: FastifyRequest,
    @Res({ passthrough: true }) reply: FastifyReply,
  ): Promise<object | undefined> {
    const prepared = await this.completions.prepareText(principal.tenantId, body);
    return this.answer(prepared, TEXT, request, reply);
  }

  private async answer(
    prepared: PreparedCompletion,
    shape: Shape,
    request: FastifyRequest,
    reply: FastifyReply,
  ): Promise<object | undefined> {
    await this.completions.enqueue(prepared);
    const id = shape.idPrefix + prepared.serve.requestId;
    const created = Math.floor(Date.now() / 1000);
    const head = { id, created, model: prepared.model };
    const abort = new AbortController();
    // 'close' on the response, not the request: the request stream closes once its body is read.
    reply.raw.on('close', () => abort.abort());
    if (!prepared.stream) {
      let text = '';
      for await (const message of this.completions.replies(prepared, abort.signal)) {
        if (message.kind === 'delta') text += message.text;
        else if (message.kind === 'error') throw replyError(message);
        else {
          return {
            ...head,
            object: shape.object,
            choices: [shape.choice(text, message.finishReason, false, true)],
            usage: usageOf(message),
          };
        }
      }
      return undefined; // the client went away
    }
    await this.stream(prepared, shape, head, request, reply, abort.signal);
    return undefined;
  }

  /** Server-sent events: `data: {chunk}` lines, a final usage chunk on request, `data: [DONE]`. */
  private async stream(
    prepared: PreparedCompletion,
    shape: Shape,
    head: { id: string; created: number; model: string },
    request: FastifyRequest,
    reply: FastifyReply,
    signal: AbortSignal,
  ): Promise<void> {
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-request-id': request.id,
    });
    const send = (data: object | string) =>
      raw.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
    const chunk = (choices: object[], usage?: Usage) =>
      send({
        ...head,
        object: shape.chunkObject,
        choices,
        ...(prepared.includeUsage ? { usage: usage ?? null } : {}),
      });
    let first = true;
    try {
      for await (const message of this.completions.replies(prepared, signal)) {
        if (message.kind === 'delta') {
          chunk([shape.choice(message.text, null, true, first)]);
          first = false;
        } else if (message.kind === 'error') {
          throw replyError(message);
        } else {
          chunk([shape.choice(first ? '' : null, message.finishReason, true, first)]);
          if (prepared.includeUsage) chunk([], usageOf(message));
          send('[DONE]');
        }
      }
    } catch (error) {
      // Headers are sent: the error travels as an event, which OpenAI's clients raise.
      const known = error instanceof ApiError;
      if (!known) request.log.error({ context: 'Completions', err: error }, String(error));
      send(
        known
          ? openAiError(error.code, error.message, error.param)
          : openAiError('internal_error', 'Internal server error'),
      );
    } finally {
      raw.end();
    }
  }
}
