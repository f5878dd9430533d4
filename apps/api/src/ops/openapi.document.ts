import {
  ChatCompletionRequestSchema,
  CompletionRequestSchema,
  CreateFineTuningJobRequestSchema,
  CreateWebhookEndpointRequestSchema,
  CreatedWebhookEndpointObjectSchema,
  FILE_PURPOSES,
  FileObjectSchema,
  FineTuningJobEstimateSchema,
  FineTuningJobEventSchema,
  FineTuningJobSchema,
  JOB_STATUSES,
  OpenAiErrorSchema,
  WebhookDeliveryListSchema,
  WebhookDeliveryObjectSchema,
  WebhookEndpointListSchema,
  WebhookEndpointObjectSchema,
  listPage,
} from '@lorafleet/contracts';
import { z } from 'zod';
import { ADAPTER_FILES } from '../adapters/adapters.service';
import {
  AdapterObjectSchema,
  ChatCompletionSchema,
  CheckpointListSchema,
  CheckpointSchema,
  DeletedSchema,
  FileListSchema,
  FineTuningJobListSchema,
  HealthSchema,
  ModelListSchema,
  ModelObjectSchema,
  ReadinessSchema,
  TextCompletionSchema,
  WorkerListSchema,
  WorkerObjectSchema,
} from './response.schemas';

/*
 * The OpenAPI 3.1 document of the REST API, built from the zod schemas. This module is the
 * one source: `/docs/openapi.json` serves it, `npm run openapi` writes it to
 * docs/openapi.json, and test/ops.spec.ts fails when the committed file or the live route
 * table drifts from it.
 */

type JsonSchema = Record<string, unknown>;
type Method = 'get' | 'post' | 'delete';
type Auth = 'bearer' | 'admin' | 'basic' | 'none';

interface Operation {
  method: Method;
  path: string;
  operationId: string;
  summary: string;
  description?: string;
  tag:
    'Files' | 'Models' | 'Completions' | 'Fine-tuning' | 'Webhooks' | 'Adapters' | 'Fleet' | 'Ops';
  auth: Auth;
  parameters?: JsonSchema[];
  requestBody?: JsonSchema;
  status: number;
  response: JsonSchema;
  errors: number[];
}

export const OPENAPI_VERSION = '3.1.0';
export const API_DOC_VERSION = '0.1.0';

const ref = (id: string): JsonSchema => ({ $ref: `#/components/schemas/${id}` });

/**
 * Converts registered zod schemas to `components.schemas`. Responses use zod's output view
 * (defaults are always present); the request body uses its input view (defaults optional).
 */
function componentSchemas(
  entries: [string, z.ZodType][],
  io: 'input' | 'output',
): Record<string, JsonSchema> {
  const registry = z.registry<{ id: string }>();
  for (const [id, schema] of entries) registry.add(schema, { id });
  const { schemas } = z.toJSONSchema(registry, {
    io,
    target: 'draft-2020-12',
    uri: (id) => `#/components/schemas/${id}`,
    override: (ctx) => {
      // zod's output view marks every object closed; the API may add fields to a response
      // later, so only objects the schema itself declares strict stay closed.
      const def = ctx.zodSchema._zod.def as { type: string; catchall?: unknown };
      if (io === 'output' && def.type === 'object' && def.catchall === undefined) {
        delete ctx.jsonSchema.additionalProperties;
      }
      // `z.number().int()` adds the safe-integer range to every integer; it says nothing here.
      if (ctx.jsonSchema.minimum === Number.MIN_SAFE_INTEGER) delete ctx.jsonSchema.minimum;
      if (ctx.jsonSchema.maximum === Number.MAX_SAFE_INTEGER) delete ctx.jsonSchema.maximum;
    },
  });
  const out: Record<string, JsonSchema> = {};
  for (const [id, schema] of Object.entries(schemas)) {
    const { $id: _id, $schema: _schema, ...rest } = schema as JsonSchema;
    out[id] = rest;
  }
  return out;
}

const ERROR_DESCRIPTIONS: Record<number, string> = {
  400: 'Invalid request: the message and `param` name the problem',
  401: 'Missing, unknown or revoked API key',
  403: 'The key may not do this (admin-only route, or a base model)',
  404: "No such object for this tenant (another tenant's ids also answer 404)",
  409: 'The job (or webhook delivery) is in a state that does not allow this',
  413: 'Body or upload over the configured limit',
  415: 'A request body that is present is not application/json (bodiless POSTs are fine)',
  422: 'Idempotency-Key reused with a different body',
  429: 'Too many active jobs for this tenant',
  503: 'Postgres (or, for ops probes, Redis) is unreachable; nothing was stored',
  504: 'No serving worker answered in time (it may have died); retrying may reach another',
};

const json = (schema: JsonSchema) => ({ 'application/json': { schema } });

const pathParam = (name: string, description: string): JsonSchema => ({
  name,
  in: 'path',
  required: true,
  description,
  schema: { type: 'string' },
});

const limitParam = (max = 100): JsonSchema => ({
  name: 'limit',
  in: 'query',
  required: false,
  description: `Page size, 1 to ${max}, in decimal digits`,
  schema: { type: 'integer', minimum: 1, maximum: max, default: 20 },
});

const ifNoneMatch: JsonSchema = {
  name: 'If-None-Match',
  in: 'header',
  required: false,
  description: 'An ETag from an earlier response; unchanged → 304 with no body',
  schema: { type: 'string' },
};

const jobId = pathParam('fine_tuning_job_id', 'A job id (`ftjob-…`)');
const fileId = pathParam('file_id', 'A file id (`file-…`)');
const adapterId = pathParam('adapter_id', 'An adapter id (`adapter-…`)');
const modelId = pathParam(
  'model',
  'A base model name, or a fine-tuned model `ft:<base>:<tenant>:<suffix>:<job>`; may hold `/`',
);

const endpointId = pathParam('webhook_endpoint_id', 'A webhook endpoint id (`we_…`)');
const deliveryId = pathParam('delivery_id', 'A webhook delivery id (`whdel_…`)');
const afterParam = (what: string): JsonSchema => ({
  name: 'after',
  in: 'query',
  required: false,
  description: `The id of the last ${what} of the previous page`,
  schema: { type: 'string' },
});

const WEBHOOK_OPERATIONS: Operation[] = [
  {
    method: 'post',
    path: '/v1/webhook_endpoints',
    operationId: 'createWebhookEndpoint',
    summary: 'Add a webhook endpoint for job events',
    description:
      'Events: `fine_tuning.job.succeeded`, `.failed`, `.cancelled`, signed per Standard Webhooks ' +
      '(`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`). The answer ' +
      'carries the signing `secret`, shown only here. The URL must be http(s) and resolve to public ' +
      'addresses only (400 naming `url` otherwise) unless the server sets LORAFLEET_WEBHOOK_ALLOW_PRIVATE=1.',
    tag: 'Webhooks',
    auth: 'bearer',
    requestBody: { required: true, content: json(ref('CreateWebhookEndpointRequest')) },
    status: 201,
    response: json(ref('CreatedWebhookEndpoint')),
    errors: [400, 401, 415, 503],
  },
  {
    method: 'get',
    path: '/v1/webhook_endpoints',
    operationId: 'listWebhookEndpoints',
    summary: "List this tenant's webhook endpoints, newest first",
    tag: 'Webhooks',
    auth: 'bearer',
    parameters: [afterParam('endpoint'), limitParam()],
    status: 200,
    response: json(ref('WebhookEndpointList')),
    errors: [400, 401, 503],
  },
  {
    method: 'get',
    path: '/v1/webhook_endpoints/{webhook_endpoint_id}',
    operationId: 'retrieveWebhookEndpoint',
    summary: 'Retrieve a webhook endpoint (without its secret)',
    tag: 'Webhooks',
    auth: 'bearer',
    parameters: [endpointId],
    status: 200,
    response: json(ref('WebhookEndpoint')),
    errors: [401, 404, 503],
  },
  {
    method: 'delete',
    path: '/v1/webhook_endpoints/{webhook_endpoint_id}',
    operationId: 'deleteWebhookEndpoint',
    summary: 'Delete a webhook endpoint and its delivery log; pending retries stop',
    tag: 'Webhooks',
    auth: 'bearer',
    parameters: [endpointId],
    status: 200,
    response: json(ref('WebhookEndpointDeleted')),
    errors: [401, 404, 503],
  },
  {
    method: 'get',
    path: '/v1/webhook_endpoints/{webhook_endpoint_id}/deliveries',
    operationId: 'listWebhookDeliveries',
    summary: "An endpoint's delivery log, newest first",
    description:
      'Each delivery: event id and type, job, attempts, last status code or error, next attempt ' +
      'time, delivered_at. A failed attempt is retried after 5 s, doubling, for up to 72 h ' +
      '(LORAFLEET_WEBHOOK_RETRY_BASE_MS, LORAFLEET_WEBHOOK_MAX_AGE_MS), then marked `failed`.',
    tag: 'Webhooks',
    auth: 'bearer',
    parameters: [endpointId, afterParam('delivery'), limitParam()],
    status: 200,
    response: json(ref('WebhookDeliveryList')),
    errors: [400, 401, 404, 503],
  },
  {
    method: 'get',
    path: '/v1/webhook_endpoints/{webhook_endpoint_id}/deliveries/{delivery_id}',
    operationId: 'retrieveWebhookDelivery',
    summary: 'Retrieve one delivery of an endpoint',
    tag: 'Webhooks',
    auth: 'bearer',
    parameters: [endpointId, deliveryId],
    status: 200,
    response: json(ref('WebhookDelivery')),
    errors: [401, 404, 503],
  },
  {
    method: 'post',
    path: '/v1/webhook_endpoints/{webhook_endpoint_id}/deliveries/{delivery_id}/redeliver',
    operationId: 'redeliverWebhookDelivery',
    summary: "Send a delivered or failed delivery's event again",
    description:
      'Creates a new delivery of the same event (same `webhook-id` and body, so receivers can ' +
      'deduplicate), due at once, with a fresh retry window; answers it. A delivery still `pending` ' +
      'is retried on its own: 409.',
    tag: 'Webhooks',
    auth: 'bearer',
    parameters: [endpointId, deliveryId],
    status: 202,
    response: json(ref('WebhookDelivery')),
    errors: [401, 404, 409, 415, 503],
  },
];

const jobControl = (
  action: 'cancel' | 'pause' | 'resume',
  summary: string,
  description: string,
): Operation => ({
  method: 'post',
  path: `/v1/fine_tuning/jobs/{fine_tuning_job_id}/${action}`,
  operationId: `${action}FineTuningJob`,
  summary,
  description,
  tag: 'Fine-tuning',
  auth: 'bearer',
  parameters: [jobId],
  status: 200,
  response: json(ref('FineTuningJob')),
  errors: [401, 404, 409, 415, 503],
});

const OPERATIONS: Operation[] = [
  {
    method: 'post',
    path: '/v1/files',
    operationId: 'createFile',
    summary: 'Upload a JSONL training file',
    description:
      'multipart/form-data with `file` and `purpose=fine-tune`. The file is validated on upload; ' +
      'a bad file is stored with `status: "error"` and line-numbered `status_details`, and jobs refuse it.',
    tag: 'Files',
    auth: 'bearer',
    requestBody: {
      required: true,
      content: {
        'multipart/form-data': {
          schema: {
            type: 'object',
            required: ['file', 'purpose'],
            properties: {
              file: { type: 'string', contentMediaType: 'application/octet-stream' },
              purpose: { type: 'string', enum: [...FILE_PURPOSES] },
            },
          },
        },
      },
    },
    status: 200,
    response: json(ref('FileObject')),
    errors: [400, 401, 413, 503],
  },
  {
    method: 'get',
    path: '/v1/files',
    operationId: 'listFiles',
    summary: "List this tenant's files",
    tag: 'Files',
    auth: 'bearer',
    status: 200,
    response: json(ref('FileList')),
    errors: [401, 503],
  },
  {
    method: 'get',
    path: '/v1/files/{file_id}',
    operationId: 'retrieveFile',
    summary: 'Retrieve a file object',
    tag: 'Files',
    auth: 'bearer',
    parameters: [fileId],
    status: 200,
    response: json(ref('FileObject')),
    errors: [401, 404, 503],
  },
  {
    method: 'get',
    path: '/v1/files/{file_id}/content',
    operationId: 'retrieveFileContent',
    summary: 'Download the bytes of a file',
    tag: 'Files',
    auth: 'bearer',
    parameters: [fileId],
    status: 200,
    response: { 'application/jsonl': { schema: { type: 'string' } } },
    errors: [401, 404, 503],
  },
  {
    method: 'delete',
    path: '/v1/files/{file_id}',
    operationId: 'deleteFile',
    summary: 'Delete a file',
    tag: 'Files',
    auth: 'bearer',
    parameters: [fileId],
    status: 200,
    response: json(ref('FileDeleted')),
    errors: [401, 404, 503],
  },
  {
    method: 'get',
    path: '/v1/models',
    operationId: 'listModels',
    summary: "List base models and this tenant's fine-tuned models",
    tag: 'Models',
    auth: 'bearer',
    status: 200,
    response: json(ref('ModelList')),
    errors: [401, 503],
  },
  {
    method: 'get',
    path: '/v1/models/{model}',
    operationId: 'retrieveModel',
    summary: 'Retrieve a base or fine-tuned model',
    tag: 'Models',
    auth: 'bearer',
    parameters: [modelId],
    status: 200,
    response: json(ref('Model')),
    errors: [401, 404, 503],
  },
  {
    method: 'delete',
    path: '/v1/models/{model}',
    operationId: 'deleteModel',
    summary: 'Delete a fine-tuned model (its adapter)',
    description: 'Only `ft:` models can be deleted; a base model answers 403.',
    tag: 'Models',
    auth: 'bearer',
    parameters: [modelId],
    status: 200,
    response: json(ref('ModelDeleted')),
    errors: [401, 403, 404, 503],
  },
  ...(
    [
      ['/v1/chat/completions', 'createChatCompletion', 'Chat', 'ChatCompletion'],
      ['/v1/completions', 'createCompletion', 'Text', 'TextCompletion'],
    ] as const
  ).map(([path, operationId, kind, schema]): Operation => ({
    method: 'post',
    path,
    operationId,
    summary: `${kind} completion from a base or ft: model, served by workers`,
    description:
      "OpenAI-compatible. `model` is a base model or one of this tenant's `ft:` models " +
      "(another tenant's is a 404). Parameters: `max_tokens` (chat: also `max_completion_tokens`), " +
      '`temperature`, `top_p`, `stop` (up to 4), `seed`, `n` = 1 only. With `stream: true` the ' +
      'answer is `text/event-stream`: `data: {chunk}` events, a final usage chunk when ' +
      '`stream_options.include_usage` is set, then `data: [DONE]`; a failure after the first ' +
      'event is an `data: {"error": …}` event.',
    tag: 'Completions',
    auth: 'bearer',
    requestBody: { required: true, content: json(ref(`${schema}Request`)) },
    status: 200,
    response: {
      ...json(ref(schema)),
      'text/event-stream': { schema: { type: 'string', description: 'server-sent events' } },
    },
    errors: [400, 401, 404, 503, 504],
  })),
  {
    method: 'post',
    path: '/v1/fine_tuning/jobs',
    operationId: 'createFineTuningJob',
    summary: 'Create a fine-tuning job',
    description:
      'OpenAI-compatible, plus the `lora` and `training` extension objects. The job row and its ' +
      'outbox entry are committed in one transaction, so a 201 is never lost, even while Redis is down. ' +
      'With an `Idempotency-Key`, the same key and body replay the first job (`Idempotent-Replayed: true`).',
    tag: 'Fine-tuning',
    auth: 'bearer',
    parameters: [
      {
        name: 'Idempotency-Key',
        in: 'header',
        required: false,
        description: '1-255 visible ASCII characters; scoped to the tenant',
        schema: { type: 'string', minLength: 1, maxLength: 255, pattern: '^[\\x21-\\x7e]+$' },
      },
    ],
    requestBody: { required: true, content: json(ref('CreateFineTuningJobRequest')) },
    status: 201,
    response: json(ref('FineTuningJob')),
    errors: [400, 401, 404, 413, 415, 422, 429, 503],
  },
  {
    method: 'post',
    path: '/v1/fine_tuning/jobs/estimate',
    operationId: 'estimateFineTuningJob',
    summary: 'Estimate a job before creating it (lorafleet extension)',
    description:
      "Takes create's body and runs create's checks, so a bad body gets the same 4xx; creates nothing. " +
      "Answers the trainer's own token, step and epoch figures for the training file (counted in " +
      'preference pairs, with tokens of both sides, for `method.type: "dpo"`), the pre-flight peak ' +
      'memory estimate, the wall time on each backend of the live fleet from the tokens/s workers recorded ' +
      'on this base model with the same training method (`null` with a `reason` where none is recorded ' +
      'yet), and whether the tenant quota admits another job now.',
    tag: 'Fine-tuning',
    auth: 'bearer',
    requestBody: { required: true, content: json(ref('CreateFineTuningJobRequest')) },
    status: 200,
    response: json(ref('FineTuningJobEstimate')),
    errors: [400, 401, 404, 413, 415, 503],
  },
  {
    method: 'get',
    path: '/v1/fine_tuning/jobs',
    operationId: 'listFineTuningJobs',
    summary: 'List jobs, newest first, in cursor pages',
    tag: 'Fine-tuning',
    auth: 'bearer',
    parameters: [
      {
        name: 'after',
        in: 'query',
        required: false,
        description: 'Id of the last job on the previous page',
        schema: { type: 'string' },
      },
      limitParam(),
      {
        name: 'status',
        in: 'query',
        required: false,
        schema: { type: 'string', enum: [...JOB_STATUSES] },
      },
      {
        name: 'metadata',
        in: 'query',
        required: false,
        description: '`metadata[k]=v`: only jobs whose metadata holds every given pair',
        style: 'deepObject',
        explode: true,
        schema: { type: 'object', additionalProperties: { type: 'string' } },
      },
      ifNoneMatch,
    ],
    status: 200,
    response: json(ref('FineTuningJobList')),
    errors: [400, 401, 503],
  },
  {
    method: 'get',
    path: '/v1/fine_tuning/jobs/{fine_tuning_job_id}',
    operationId: 'retrieveFineTuningJob',
    summary: 'Retrieve a job (ETag / If-None-Match → 304)',
    tag: 'Fine-tuning',
    auth: 'bearer',
    parameters: [jobId, ifNoneMatch],
    status: 200,
    response: json(ref('FineTuningJob')),
    errors: [401, 404, 503],
  },
  {
    method: 'get',
    path: '/v1/fine_tuning/jobs/{fine_tuning_job_id}/events',
    operationId: 'listFineTuningJobEvents',
    summary: 'List job events, newest first',
    tag: 'Fine-tuning',
    auth: 'bearer',
    parameters: [
      jobId,
      {
        name: 'after',
        in: 'query',
        required: false,
        description:
          "Id of the last event on the previous page (`ftevent-<n>`, n being the event's ordinal within its job)",
        schema: { type: 'string' },
      },
      limitParam(),
    ],
    status: 200,
    response: json(ref('FineTuningJobEventList')),
    errors: [400, 401, 404, 503],
  },
  {
    method: 'get',
    path: '/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints',
    operationId: 'listFineTuningJobCheckpoints',
    summary: 'List job checkpoints, highest step first',
    tag: 'Fine-tuning',
    auth: 'bearer',
    parameters: [
      jobId,
      {
        name: 'after',
        in: 'query',
        required: false,
        description: 'Id of the last checkpoint on the previous page (`ftckpt-…`)',
        schema: { type: 'string' },
      },
      limitParam(),
    ],
    status: 200,
    response: json(ref('CheckpointList')),
    errors: [400, 401, 404, 503],
  },
  jobControl(
    'cancel',
    'Cancel a job',
    'Works for validating, queued, running and paused jobs; final.',
  ),
  jobControl('pause', 'Pause a running job', 'The worker checkpoints and releases the job.'),
  jobControl(
    'resume',
    'Resume a paused job',
    'The job is queued again and resumes from its checkpoint.',
  ),
  ...WEBHOOK_OPERATIONS,
  {
    method: 'get',
    path: '/v1/adapters/{adapter_id}',
    operationId: 'retrieveAdapter',
    summary: 'Retrieve an adapter (PEFT LoRA) and its config',
    tag: 'Adapters',
    auth: 'bearer',
    parameters: [adapterId],
    status: 200,
    response: json(ref('Adapter')),
    errors: [401, 404, 503],
  },
  {
    method: 'get',
    path: '/v1/adapters/{adapter_id}/files/{name}',
    operationId: 'retrieveAdapterFile',
    summary: 'Download one file of the PEFT directory',
    tag: 'Adapters',
    auth: 'bearer',
    parameters: [
      adapterId,
      {
        name: 'name',
        in: 'path',
        required: true,
        schema: { type: 'string', enum: [...ADAPTER_FILES] },
      },
    ],
    status: 200,
    response: {
      'application/json': { schema: { type: 'object' } },
      'application/octet-stream': {
        schema: { type: 'string', contentMediaType: 'application/octet-stream' },
      },
    },
    errors: [401, 404, 503],
  },
  {
    method: 'get',
    path: '/v1/adapters/{adapter_id}/archive',
    operationId: 'retrieveAdapterArchive',
    summary: 'Download the PEFT directory plus lorafleet.json lineage as tar.gz',
    tag: 'Adapters',
    auth: 'bearer',
    parameters: [adapterId],
    status: 200,
    response: {
      'application/gzip': { schema: { type: 'string', contentMediaType: 'application/gzip' } },
    },
    errors: [401, 404, 503],
  },
  {
    method: 'get',
    path: '/v1/workers',
    operationId: 'listWorkers',
    summary:
      "List GPU workers and queue depth per state (admin keys; a tenant admin sees only its own tenant's jobs on the workers and no queue depth)",
    tag: 'Fleet',
    auth: 'admin',
    status: 200,
    response: json(ref('WorkerList')),
    errors: [401, 403, 503],
  },
  {
    method: 'get',
    path: '/healthz',
    operationId: 'healthz',
    summary: 'Liveness: the process answers',
    tag: 'Ops',
    auth: 'none',
    status: 200,
    response: json(ref('Health')),
    errors: [],
  },
  {
    method: 'get',
    path: '/readyz',
    operationId: 'readyz',
    summary: 'Readiness: Postgres and Redis answer (503 otherwise)',
    description:
      '`warnings` names unsafe settings, e.g. a Redis `maxmemory-policy` other than `noeviction`.',
    tag: 'Ops',
    auth: 'none',
    status: 200,
    response: json(ref('Readiness')),
    errors: [503],
  },
  {
    method: 'get',
    path: '/metrics',
    operationId: 'metrics',
    summary: 'Prometheus metrics (text exposition format)',
    tag: 'Ops',
    auth: 'none',
    status: 200,
    response: { 'text/plain': { schema: { type: 'string' } } },
    errors: [],
  },
  {
    method: 'get',
    path: '/docs',
    operationId: 'docs',
    summary: 'This API reference as an HTML page',
    tag: 'Ops',
    auth: 'none',
    status: 200,
    response: { 'text/html': { schema: { type: 'string' } } },
    errors: [],
  },
  {
    method: 'get',
    path: '/docs/openapi.json',
    operationId: 'openapi',
    summary: 'This OpenAPI document',
    tag: 'Ops',
    auth: 'none',
    status: 200,
    response: json({ type: 'object' }),
    errors: [],
  },
  {
    method: 'get',
    path: '/admin/queues',
    operationId: 'bullBoard',
    summary: 'bull-board queue UI (HTTP Basic; any user name, a fleet admin API key as password)',
    tag: 'Ops',
    auth: 'basic',
    status: 200,
    response: { 'text/html': { schema: { type: 'string' } } },
    errors: [401],
  },
];

const SECURITY: Record<Auth, Record<string, string[]>[]> = {
  bearer: [{ apiKey: [] }],
  admin: [{ apiKey: [] }],
  basic: [{ adminBasic: [] }],
  none: [],
};

const SUCCESS_HEADERS: Record<string, JsonSchema> = {
  createFineTuningJob: {
    'Idempotent-Replayed': {
      description: '`true` when an Idempotency-Key replayed an earlier job',
      schema: { type: 'string', enum: ['true'] },
    },
  },
  listFineTuningJobs: { ETag: { schema: { type: 'string' } } },
  retrieveFineTuningJob: { ETag: { schema: { type: 'string' } } },
  retrieveFileContent: {
    'Content-Disposition': {
      description: 'Always an attachment: `attachment; filename="…"; filename*=UTF-8\'\'…`',
      schema: { type: 'string' },
    },
  },
};

/** Every answer carries the request id it was logged under (apps/api/src/http/request-logging.ts). */
const REQUEST_ID_RESPONSE = { 'X-Request-Id': { $ref: '#/components/headers/RequestId' } };

/** Every operation as `[METHOD, path]`, for the docs page and the route-coverage test. */
export function documentedRoutes(): {
  method: string;
  path: string;
  summary: string;
  auth: Auth;
}[] {
  return OPERATIONS.map((op) => ({
    method: op.method.toUpperCase(),
    path: op.path,
    summary: op.summary,
    auth: op.auth,
  }));
}

export function buildOpenApiDocument(): Record<string, unknown> {
  const responses = componentSchemas(
    [
      ['Error', OpenAiErrorSchema],
      ['FileObject', FileObjectSchema],
      ['FileList', FileListSchema],
      ['FileDeleted', DeletedSchema('file')],
      ['Model', ModelObjectSchema],
      ['ModelList', ModelListSchema],
      ['ModelDeleted', DeletedSchema('model')],
      ['ChatCompletion', ChatCompletionSchema],
      ['TextCompletion', TextCompletionSchema],
      ['FineTuningJob', FineTuningJobSchema],
      ['FineTuningJobList', FineTuningJobListSchema],
      ['FineTuningJobEstimate', FineTuningJobEstimateSchema],
      ['FineTuningJobEvent', FineTuningJobEventSchema],
      ['FineTuningJobEventList', listPage(FineTuningJobEventSchema)],
      ['Checkpoint', CheckpointSchema],
      ['CheckpointList', CheckpointListSchema],
      ['Adapter', AdapterObjectSchema],
      ['Worker', WorkerObjectSchema],
      ['WorkerList', WorkerListSchema],
      ['WebhookEndpoint', WebhookEndpointObjectSchema],
      ['CreatedWebhookEndpoint', CreatedWebhookEndpointObjectSchema],
      ['WebhookEndpointList', WebhookEndpointListSchema],
      ['WebhookEndpointDeleted', DeletedSchema('webhook_endpoint.deleted')],
      ['WebhookDelivery', WebhookDeliveryObjectSchema],
      ['WebhookDeliveryList', WebhookDeliveryListSchema],
      ['Health', HealthSchema],
      ['Readiness', ReadinessSchema],
    ],
    'output',
  );
  const requests = componentSchemas(
    [
      ['CreateFineTuningJobRequest', CreateFineTuningJobRequestSchema],
      ['ChatCompletionRequest', ChatCompletionRequestSchema],
      ['TextCompletionRequest', CompletionRequestSchema],
      ['CreateWebhookEndpointRequest', CreateWebhookEndpointRequestSchema],
    ],
    'input',
  );

  const paths: Record<string, Record<string, unknown>> = {};
  for (const op of OPERATIONS) {
    const opResponses: Record<string, unknown> = {
      [String(op.status)]: {
        description: op.summary,
        headers: { ...REQUEST_ID_RESPONSE, ...SUCCESS_HEADERS[op.operationId] },
        content: op.response,
      },
    };
    if (op.parameters?.includes(ifNoneMatch)) {
      opResponses['304'] = {
        description: 'Not modified: the If-None-Match ETag still matches',
        headers: REQUEST_ID_RESPONSE,
      };
    }
    for (const status of op.errors) {
      opResponses[String(status)] =
        op.tag === 'Ops'
          ? { description: ERROR_DESCRIPTIONS[status], headers: REQUEST_ID_RESPONSE }
          : {
              description: ERROR_DESCRIPTIONS[status],
              headers: REQUEST_ID_RESPONSE,
              content: json(ref('Error')),
            };
    }
    paths[op.path] ??= {};
    paths[op.path][op.method] = {
      operationId: op.operationId,
      summary: op.summary,
      ...(op.description ? { description: op.description } : {}),
      tags: [op.tag],
      security: SECURITY[op.auth],
      parameters: [...(op.parameters ?? []), { $ref: '#/components/parameters/RequestId' }],
      ...(op.requestBody ? { requestBody: op.requestBody } : {}),
      responses: opResponses,
    };
  }

  return {
    openapi: OPENAPI_VERSION,
    info: {
      title: 'lorafleet API',
      version: API_DOC_VERSION,
      description:
        'OpenAI-compatible fine-tuning API with LoRA extensions. Errors are ' +
        '`{"error": {"message", "type", "param", "code"}}`. Generated from the zod schemas in ' +
        'libs/contracts by apps/api/src/ops/openapi.document.ts; do not edit by hand.',
      license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
    },
    servers: [{ url: '/' }],
    tags: [
      'Files',
      'Models',
      'Completions',
      'Fine-tuning',
      'Webhooks',
      'Adapters',
      'Fleet',
      'Ops',
    ].map((name) => ({ name })),
    paths,
    components: {
      schemas: { ...responses, ...requests },
      parameters: {
        RequestId: {
          name: 'X-Request-Id',
          in: 'header',
          required: false,
          description:
            'Correlates the request with its log lines; kept when it matches the pattern, ' +
            'otherwise the API generates a UUID. Echoed on every answer.',
          schema: { type: 'string', maxLength: 128, pattern: '^[\\w.:@/+=-]{1,128}$' },
        },
      },
      headers: {
        RequestId: {
          description: "The request id the answer was logged under (the caller's or a UUID)",
          schema: { type: 'string' },
        },
      },
      securitySchemes: {
        apiKey: { type: 'http', scheme: 'bearer', description: 'Authorization: Bearer <API key>' },
        adminBasic: {
          type: 'http',
          scheme: 'basic',
          description: 'Any user name; a fleet admin API key as the password',
        },
      },
    },
  };
}

/** The exact bytes of docs/openapi.json: `npm run openapi` writes them, a test compares. */
export function renderOpenApiJson(): string {
  return `${JSON.stringify(buildOpenApiDocument(), null, 2)}\n`;
}
