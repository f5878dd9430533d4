import { lookup } from 'node:dns/promises';
import { isIPv4, isIPv6 } from 'node:net';

/**
 * The SSRF guard's address classifier (issue 20). A webhook is a request the server makes on
 * a tenant's behalf, so a URL must not reach the deployment's own network: every address its
 * host resolves to must be public unicast.
 */

/** Why an address is not public, or null when it is. */
export type NonPublicReason =
  | 'unspecified'
  | 'loopback'
  | 'private'
  | 'link-local'
  | 'unique-local'
  | 'shared (CGNAT)'
  | 'multicast'
  | 'reserved'
  | 'not an IP address';

interface Range {
  /** Address as bytes (4 for IPv4, 16 for IPv6). */
  prefix: number[];
  bits: number;
  reason: NonPublicReason;
}

const v4 = (text: string, bits: number, reason: NonPublicReason): Range => ({
  prefix: text.split('.').map(Number),
  bits,
  reason,
});

// RFC 6890's special-purpose registry, the parts a webhook must never reach.
const IPV4_RANGES: Range[] = [
  v4('0.0.0.0', 8, 'unspecified'), // "this network"; 0.0.0.0 reaches the host itself
  v4('10.0.0.0', 8, 'private'),
  v4('100.64.0.0', 10, 'shared (CGNAT)'),
  v4('127.0.0.0', 8, 'loopback'),
  v4('169.254.0.0', 16, 'link-local'), // includes cloud metadata at 169.254.169.254
  v4('172.16.0.0', 12, 'private'),
  v4('192.0.0.0', 24, 'reserved'), // IETF protocol assignments
  v4('192.0.2.0', 24, 'reserved'), // TEST-NET-1
  v4('192.168.0.0', 16, 'private'),
  v4('198.18.0.0', 15, 'reserved'), // benchmarking
  v4('198.51.100.0', 24, 'reserved'), // TEST-NET-2
  v4('203.0.113.0', 24, 'reserved'), // TEST-NET-3
  v4('224.0.0.0', 4, 'multicast'),
  v4('240.0.0.0', 4, 'reserved'), // includes broadcast 255.255.255.255
];

const v6 = (hextets: number[], bits: number, reason: NonPublicReason): Range => ({
  prefix: hextets.flatMap((h) => [h >> 8, h & 0xff]),
  bits,
  reason,
});

const IPV6_RANGES: Range[] = [
  v6([0, 0, 0, 0, 0, 0, 0, 0], 128, 'unspecified'),
  v6([0, 0, 0, 0, 0, 0, 0, 1], 128, 'loopback'),
  v6([0xfe80], 10, 'link-local'),
  v6([0xfec0], 10, 'private'), // deprecated site-local
  v6([0xfc00], 7, 'unique-local'),
  v6([0xff00], 8, 'multicast'),
  v6([0x2001, 0x0db8], 32, 'reserved'), // documentation
  v6([0x0100, 0, 0, 0], 64, 'reserved'), // discard-only
];

function inRange(bytes: number[], range: Range): boolean {
  for (let bit = 0; bit < range.bits; bit += 8) {
    const width = Math.min(8, range.bits - bit);
    const mask = (0xff << (8 - width)) & 0xff;
    const index = bit / 8;
    if ((bytes[index] & mask) !== ((range.prefix[index] ?? 0) & mask)) return false;
  }
  return true;
}

/** An IPv6 text form (with `::` and an optional dotted IPv4 tail) as 16 bytes. */
function ipv6Bytes(text: string): number[] {
  let address = text.split('%')[0]; // a zone id names an interface, not part of the address
  const tail: number[] = [];
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(address);
  if (dotted) {
    const [a, b, c, d] = dotted[1].split('.').map(Number);
    tail.push((a << 8) | b, (c << 8) | d);
    address = address.slice(0, -dotted[1].length) + '0:0';
  }
  const [head, rest] = address.split('::');
  const parse = (part: string | undefined) =>
    part ? part.split(':').map((h) => parseInt(h, 16)) : [];
  const front = parse(head);
  const back = parse(rest);
  const hextets =
    rest === undefined
      ? front
      : [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
  if (tail.length) hextets.splice(6, 2, ...tail);
  return hextets.flatMap((h) => [h >> 8, h & 0xff]);
}

/** Why `address` is not a public unicast address, or null when it is. */
export function nonPublicReason(address: string): NonPublicReason | null {
  if (isIPv4(address)) {
    const bytes = address.split('.').map(Number);
    return IPV4_RANGES.find((range) => inRange(bytes, range))?.reason ?? null;
  }
  if (!isIPv6(address)) return 'not an IP address';
  const bytes = ipv6Bytes(address);
  const embeddedV4 = bytes.slice(12).join('.');
  // IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d, deprecated) and NAT64
  // (64:ff9b::a.b.c.d) addresses reach the embedded IPv4 address: judge that one.
  const mapped = inRange(bytes, v6([0, 0, 0, 0, 0, 0xffff], 96, 'reserved'));
  const nat64 = inRange(bytes, v6([0x64, 0xff9b, 0, 0, 0, 0], 96, 'reserved'));
  const compatible =
    inRange(bytes, v6([0, 0, 0, 0, 0, 0], 96, 'reserved')) &&
    !inRange(bytes, IPV6_RANGES[0]) &&
    !inRange(bytes, IPV6_RANGES[1]);
  if (mapped || nat64 || compatible) return nonPublicReason(embeddedV4);
  return IPV6_RANGES.find((range) => inRange(bytes, range))?.reason ?? null;
}

/** A URL whose host resolves, wholly or partly, to a non-public address. */
export class WebhookTargetRefusedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WebhookTargetRefusedError';
  }
}

/**
 * Every address `hostname` resolves to (an IP literal resolves to itself). Unless
 * `allowPrivate`, throws WebhookTargetRefusedError when any of them is not public: a host
 * with one public and one private address could be steered to the private one.
 */
export async function resolveWebhookHost(
  hostname: string,
  allowPrivate: boolean,
): Promise<{ address: string; family: 4 | 6 }[]> {
  // URL.hostname keeps IPv6 literals in brackets.
  const host = hostname.startsWith('[') ? hostname.slice(1, -1) : hostname;
  let addresses: { address: string; family: number }[];
  try {
    addresses = await lookup(host, { all: true, verbatim: true });
  } catch (error) {
    throw new WebhookTargetRefusedError(
      `host ${host} does not resolve (${(error as NodeJS.ErrnoException).code ?? String(error)})`,
    );
  }
  if (addresses.length === 0) throw new WebhookTargetRefusedError(`host ${host} does not resolve`);
  if (!allowPrivate) {
    for (const { address } of addresses) {
      const reason = nonPublicReason(address);
      if (reason !== null) {
        throw new WebhookTargetRefusedError(
          `host ${host} resolves to ${address}, a ${reason} address; webhooks only reach public addresses`,
        );
      }
    }
  }
  return addresses.map(({ address, family }) => ({ address, family: family === 6 ? 6 : 4 }));
}
