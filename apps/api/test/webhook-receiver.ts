import {
  createServer,
  type IncomingHttpHeaders,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';

/** One request a receiver got. */
export interface ReceivedWebhook {
  headers: IncomingHttpHeaders;
  body: string;
  /** `Date.now()` when the request's body had arrived. */
  at: number;
}

/** What a receiver does with its n-th request (0-based): answer a status, or never answer. */
export type ReceiverBehaviour = (index: number) => number | 'hang';

/** A local HTTP server standing in for a tenant's webhook receiver. */
export class WebhookReceiver {
  readonly received: ReceivedWebhook[] = [];
  private readonly hanging: ServerResponse[] = [];
  private server: Server | undefined;

  constructor(public behaviour: ReceiverBehaviour = () => 200) {}

  async start(): Promise<this> {
    this.server = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        const index = this.received.length;
        this.received.push({
          headers: request.headers,
          body: Buffer.concat(chunks).toString('utf8'),
          at: Date.now(),
        });
        const answer = this.behaviour(index);
        if (answer === 'hang') {
          this.hanging.push(response);
          return;
        }
        response.writeHead(answer, { 'content-type': 'text/plain' }).end(`answered ${answer}`);
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    return this;
  }

  get url(): string {
    const { port } = this.server!.address() as AddressInfo;
    return `http://127.0.0.1:${port}/hooks`;
  }

  async close(): Promise<void> {
    for (const response of this.hanging) response.destroy();
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()) ?? resolve());
  }
}

/**
 * Standard Webhooks verification written from the specification alone
 * (https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md),
 * with WebCrypto rather than the API's node:crypto code: the secret after `whsec_` is base64;
 * the signed content is `${webhook-id}.${webhook-timestamp}.${body}`; `webhook-signature` is a
 * space-separated list of `v1,<base64 HMAC-SHA256>`; timestamps older or newer than the
 * tolerance are refused. Returns why it fails, or null when the request verifies.
 */
export async function verifyStandardWebhook(
  secret: string,
  received: ReceivedWebhook,
  toleranceSeconds = 300,
): Promise<string | null> {
  const header = (name: string) => {
    const value = received.headers[name];
    return typeof value === 'string' ? value : undefined;
  };
  const id = header('webhook-id');
  const timestamp = header('webhook-timestamp');
  const signatures = header('webhook-signature');
  if (!id || !timestamp || !signatures) return 'missing webhook-* headers';
  if (!/^\d+$/.test(timestamp)) return `timestamp ${timestamp} is not unix seconds`;
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > toleranceSeconds) {
    return `timestamp ${timestamp} is outside the tolerance`;
  }
  if (!secret.startsWith('whsec_')) return 'secret lacks the whsec_ prefix';
  const key = await crypto.subtle.importKey(
    'raw',
    Buffer.from(secret.slice('whsec_'.length), 'base64'),
    { name: 'HMAC', hash: 'SHA-256' },
    false,
    ['verify'],
  );
  const content = new TextEncoder().encode(`${id}.${timestamp}.${received.body}`);
  for (const entry of signatures.split(' ')) {
    const [version, signature] = entry.split(',');
    if (version !== 'v1' || !signature) continue;
    if (await crypto.subtle.verify('HMAC', key, Buffer.from(signature, 'base64'), content)) {
      return null;
    }
  }
  return `no v1 signature in "${signatures}" matches`;
}
