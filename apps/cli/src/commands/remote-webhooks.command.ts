/**
 * `lorafleet webhooks create|list|get|delete|deliveries|redeliver`: signed webhook endpoints
 * and their delivery logs over REST (`/v1/webhook_endpoints`, issue 20).
 */
import {
  WEBHOOK_EVENT_TYPES,
  type CreatedWebhookEndpointObject,
  type WebhookDeliveryObject,
  type WebhookEndpointObject,
} from '@lorafleet/contracts';

import { EXIT_OK, type CliIo } from '../cli.io';
import { isoTime, keyValues, table } from '../remote/format';
import {
  CONNECTION_HELP,
  dispatchGroup,
  expectPositionals,
  runRemote,
  withUsage,
} from '../remote/remote-command';

export const WEBHOOKS_USAGE = `Usage: lorafleet webhooks <command> [options]

Commands:
  create --url <url> [--event <type>]...
                              add an endpoint; prints its signing secret (shown only once)
  list                        this tenant's endpoints
  get <endpoint-id>           one endpoint (without its secret)
  delete <endpoint-id>        delete an endpoint and its delivery log
  deliveries <endpoint-id>    the endpoint's delivery log, newest first
  redeliver <endpoint-id> <delivery-id>
                              send a delivered or failed delivery's event again

Run "lorafleet webhooks <command> --help" for a command's options.`;

const CREATE_USAGE = `Usage: lorafleet webhooks create --url <url> [--event <type>]... [options]

Adds an endpoint that receives the tenant's job events, signed per Standard Webhooks
(webhook-id, webhook-timestamp, webhook-signature). The API answers with the signing secret
(whsec_…) this once: store it where your receiver can read it.

Options:
  --url <url>             the receiver's http(s) URL; it must resolve to a public address
  --event <type>          an event to subscribe to; repeat for several (default: all of
                          ${WEBHOOK_EVENT_TYPES.join(', ')})

${CONNECTION_HELP}`;

const LIST_USAGE = `Usage: lorafleet webhooks list [options]

${CONNECTION_HELP}`;

const GET_USAGE = `Usage: lorafleet webhooks get <endpoint-id> [options]

${CONNECTION_HELP}`;

const DELETE_USAGE = `Usage: lorafleet webhooks delete <endpoint-id> [options]

${CONNECTION_HELP}`;

const DELIVERIES_USAGE = `Usage: lorafleet webhooks deliveries <endpoint-id> [--limit <n>] [--after <delivery-id>] [options]

Each delivery: the event, its attempts, the last answer (status code or error), when the
next retry is due, and when it was delivered.

Options:
  --limit <n>             deliveries per page, 1 to 100 (default 20)
  --after <delivery-id>   the page after this delivery

${CONNECTION_HELP}`;

const REDELIVER_USAGE = `Usage: lorafleet webhooks redeliver <endpoint-id> <delivery-id> [options]

Sends the delivery's event again as a new delivery (same webhook-id, so receivers can
deduplicate). A delivery still pending is retried on its own and is refused here.

${CONNECTION_HELP}`;

function endpointLines(endpoint: WebhookEndpointObject | CreatedWebhookEndpointObject): string {
  return keyValues([
    ['id', endpoint.id],
    ['url', endpoint.url],
    ['events', endpoint.events.join(', ')],
    ['created_at', isoTime(endpoint.created_at)],
    ...('secret' in endpoint ? [['secret', endpoint.secret] as [string, unknown]] : []),
  ]);
}

function deliveryLines(delivery: WebhookDeliveryObject): string {
  return keyValues([
    ['id', delivery.id],
    ['event_id', delivery.event_id],
    ['event_type', delivery.event_type],
    ['job_id', delivery.job_id],
    ['status', delivery.status],
    ['attempts', delivery.attempts],
    ['next_attempt_at', isoTime(delivery.next_attempt_at)],
    ['created_at', isoTime(delivery.created_at)],
  ]);
}

const print = (io: CliIo, json: boolean, value: unknown, text: () => string) =>
  io.out(json ? JSON.stringify(value, null, 2) : text());

const endpointPath = (id: string) => `/v1/webhook_endpoints/${encodeURIComponent(id)}`;

async function create(args: string[], io: CliIo): Promise<number> {
  return runRemote(
    args,
    io,
    CREATE_USAGE,
    { url: { type: 'string' }, event: { type: 'string', multiple: true } },
    async (ctx) => {
      expectPositionals(ctx.positionals, []);
      const events = (ctx.values.event as string[] | undefined) ?? [...WEBHOOK_EVENT_TYPES];
      // A missing --url is sent as such: the API's 400 names the param like every other error.
      const endpoint = await ctx.client.json<CreatedWebhookEndpointObject>(
        'POST',
        '/v1/webhook_endpoints',
        { body: { url: ctx.values.url, events } },
      );
      print(io, ctx.json, endpoint, () => endpointLines(endpoint));
      if (!ctx.json) io.err('The secret is shown only now: store it to verify signatures.');
      return EXIT_OK;
    },
  );
}

async function list(args: string[], io: CliIo): Promise<number> {
  return runRemote(args, io, LIST_USAGE, {}, async (ctx) => {
    expectPositionals(ctx.positionals, []);
    const page = await ctx.client.json<{ data: WebhookEndpointObject[] }>(
      'GET',
      '/v1/webhook_endpoints',
      { query: { limit: '100' } },
    );
    print(io, ctx.json, page, () =>
      page.data.length === 0
        ? 'No webhook endpoints.'
        : table(
            ['ID', 'CREATED', 'EVENTS', 'URL'],
            page.data.map((e) => [e.id, isoTime(e.created_at), e.events.join(','), e.url]),
          ),
    );
    return EXIT_OK;
  });
}

async function get(args: string[], io: CliIo): Promise<number> {
  return runRemote(args, io, GET_USAGE, {}, async (ctx) => {
    const [id] = expectPositionals(ctx.positionals, ['endpoint-id']);
    const endpoint = await ctx.client.json<WebhookEndpointObject>('GET', endpointPath(id));
    print(io, ctx.json, endpoint, () => endpointLines(endpoint));
    return EXIT_OK;
  });
}

async function remove(args: string[], io: CliIo): Promise<number> {
  return runRemote(args, io, DELETE_USAGE, {}, async (ctx) => {
    const [id] = expectPositionals(ctx.positionals, ['endpoint-id']);
    const result = await ctx.client.json<{ id: string }>('DELETE', endpointPath(id));
    print(io, ctx.json, result, () => `deleted ${result.id}`);
    return EXIT_OK;
  });
}

async function deliveries(args: string[], io: CliIo): Promise<number> {
  return runRemote(
    args,
    io,
    DELIVERIES_USAGE,
    { limit: { type: 'string' }, after: { type: 'string' } },
    async (ctx) => {
      const [id] = expectPositionals(ctx.positionals, ['endpoint-id']);
      const page = await ctx.client.json<{ data: WebhookDeliveryObject[]; has_more: boolean }>(
        'GET',
        `${endpointPath(id)}/deliveries`,
        {
          query: {
            limit: ctx.values.limit as string | undefined,
            after: ctx.values.after as string | undefined,
          },
        },
      );
      print(io, ctx.json, page, () =>
        page.data.length === 0
          ? 'No deliveries.'
          : table(
              ['ID', 'EVENT', 'JOB', 'STATUS', 'ATTEMPTS', 'LAST', 'NEXT', 'DELIVERED'],
              page.data.map((d) => [
                d.id,
                d.event_type,
                d.job_id,
                d.status,
                d.attempts,
                d.last_status_code ?? d.last_error,
                isoTime(d.next_attempt_at),
                isoTime(d.delivered_at),
              ]),
            ) + (page.has_more ? `\n(more: --after ${page.data.at(-1)?.id ?? ''})` : ''),
      );
      return EXIT_OK;
    },
  );
}

async function redeliver(args: string[], io: CliIo): Promise<number> {
  return runRemote(args, io, REDELIVER_USAGE, {}, async (ctx) => {
    const [id, deliveryId] = expectPositionals(ctx.positionals, ['endpoint-id', 'delivery-id']);
    const delivery = await ctx.client.json<WebhookDeliveryObject>(
      'POST',
      `${endpointPath(id)}/deliveries/${encodeURIComponent(deliveryId)}/redeliver`,
    );
    print(io, ctx.json, delivery, () => deliveryLines(delivery));
    return EXIT_OK;
  });
}

export function runWebhooks(args: string[], io: CliIo): Promise<number> {
  return dispatchGroup(
    'webhooks',
    WEBHOOKS_USAGE,
    {
      create: withUsage(CREATE_USAGE, create),
      list: withUsage(LIST_USAGE, list),
      get: withUsage(GET_USAGE, get),
      delete: withUsage(DELETE_USAGE, remove),
      deliveries: withUsage(DELIVERIES_USAGE, deliveries),
      redeliver: withUsage(REDELIVER_USAGE, redeliver),
    },
    args,
    io,
  );
}
