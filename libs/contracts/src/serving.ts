import { z } from 'zod';

/**
 * Completions (issue 19): the OpenAI request bodies of `POST /v1/chat/completions` and
 * `POST /v1/completions`, and the messages that carry a request to a serving worker and its
 * tokens back over Redis Streams (ADR 0006).
 */

/** OpenAI's cap on `stop` strings. */
export const MAX_STOP_SEQUENCES = 4;

/** OpenAI's default `max_tokens` for `/v1/completions`; chat defaults to the context left. */
export const DEFAULT_COMPLETION_MAX_TOKENS = 16;

const stop = z
  .union([z.string(), z.array(z.string()).max(MAX_STOP_SEQUENCES)])
  .nullish()
  .transform((value) => (value == null ? [] : typeof value === 'string' ? [value] : value))
  .refine((values) => values.every((v) => v.length > 0), 'stop strings must not be empty');

/** Parameters both endpoints share, named and bounded as OpenAI's. */
const samplingShape = {
  model: z.string().min(1),
  max_tokens: z.number().int().min(1).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  stop,
  seed: z
    .number()
    .int()
    .min(-(2 ** 31))
    .max(2 ** 31 - 1)
    .nullish(),
  n: z
    .number()
    .int()
    .nullish()
    .refine((n) => n == null || n === 1, 'only n = 1 is supported'),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish() }).nullish(),
  user: z.string().nullish(),
};

/** Text of a message: a string, or OpenAI's content parts of type `text` only. */
const messageContent = z
  .union([
    z.string(),
    z.array(
      z.object({
        type: z.literal('text', { message: 'only text content parts are supported' }),
        text: z.string(),
      }),
    ),
  ])
  .transform((content) =>
    typeof content === 'string' ? content : content.map((part) => part.text).join(''),
  );

export const ChatCompletionRequestSchema = z.object({
  ...samplingShape,
  messages: z
    .array(
      z.object({
        // `developer` is what newer OpenAI clients send for a system message.
        role: z
          .enum(['system', 'developer', 'user', 'assistant'], {
            message: 'role must be system, developer, user or assistant',
          })
          .transform((role) => (role === 'developer' ? 'system' : role)),
        content: messageContent,
        name: z.string().nullish(),
      }),
    )
    .min(1, 'messages must hold at least one message'),
  max_completion_tokens: z.number().int().min(1).nullish(),
});
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequestSchema>;

export const CompletionRequestSchema = z.object({
  ...samplingShape,
  /** A string, or one prompt as token ids; OpenAI's batched prompts (n > 1 prompts) are not served. */
  prompt: z.union([
    z.string().min(1, 'prompt must not be empty'),
    z.array(z.number().int().min(0)).min(1, 'prompt must not be empty'),
  ]),
  echo: z
    .boolean()
    .nullish()
    .refine((echo) => echo !== true, 'echo is not supported'),
  suffix: z
    .string()
    .nullish()
    .refine((suffix) => suffix == null, 'suffix is not supported'),
});
export type CompletionRequest = z.infer<typeof CompletionRequestSchema>;

// ---- Redis Streams (ADR 0006) ----------------------------------------------------------------

/**
 * Stream and group names. WARNING: stored data, like queue names (ADR 0003): renaming one
 * strands the requests waiting under the old name.
 */
export const SERVING_STREAMS = {
  /** Requests for base model `base`: one stream per base. */
  requests: (prefix: string, base: string) => `${prefix}:serve:req:${base}`,
  /** Tokens of one request, back to the API process holding its client. */
  replies: (prefix: string, requestId: string) => `${prefix}:serve:tok:${requestId}`,
  /**
   * Pub/sub channel of request ids whose client went away: the worker holding one cancels it,
   * freeing its batch slot (a lost message only means the request runs to its end).
   */
  cancels: (prefix: string) => `${prefix}:serve:cancel`,
  /** The consumer group every serving worker joins on each request stream. */
  group: 'serving-workers',
} as const;

/** A completion request as a serving worker receives it: prompt ids, never text. */
export const ServeRequestSchema = z.object({
  schemaVersion: z.literal(1),
  requestId: z.string().min(1),
  tenantId: z.string().min(1),
  /** The base model's name under LORAFLEET_MODELS_DIR. */
  baseModel: z.string().min(1),
  /** The content hash the API computed (libs/data `hashBaseModel`); the worker's must equal it. */
  baseModelHash: z.string().min(1),
  /** The adapter row id of an `ft:` model, or null for the base model itself. */
  adapterId: z.string().min(1).nullable(),
  promptIds: z.array(z.number().int().min(0)).min(1),
  maxTokens: z.number().int().min(1),
  temperature: z.number().min(0),
  topP: z.number().gt(0).max(1),
  stop: z.array(z.string()),
  seed: z.number().int().nullable(),
  /** Epoch ms after which the API no longer waits: a worker drops the request unstarted. */
  deadline: z.number().int(),
});
export type ServeRequest = z.infer<typeof ServeRequestSchema>;

export const ServeFinishReasonSchema = z.enum(['stop', 'length']);

export const ServeUsageSchema = z.object({
  promptTokens: z.number().int(),
  completionTokens: z.number().int(),
  totalTokens: z.number().int(),
});

/** One entry on a request's reply stream. */
export const ServeReplySchema = z.discriminatedUnion('kind', [
  /** Newly final text of one or more tokens (`tokens` of them). */
  z.object({ kind: z.literal('delta'), text: z.string(), tokens: z.number().int().min(1) }),
  z.object({
    kind: z.literal('done'),
    finishReason: ServeFinishReasonSchema,
    usage: ServeUsageSchema,
  }),
  /** `code` is an OpenAI error code (ERROR_CODES); `param` names the field to blame. */
  z.object({
    kind: z.literal('error'),
    code: z.string(),
    message: z.string(),
    param: z.string().nullable(),
  }),
]);
export type ServeReply = z.infer<typeof ServeReplySchema>;
