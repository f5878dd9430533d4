/**
 * What every remote command shares: the connection options (`--api-url`, `--api-key`,
 * `--json`), their environment fallbacks, and the mapping of failures to exit codes.
 *
 * Exit codes of remote commands:
 *   0  success
 *   1  the API refused the request (its OpenAI error message and `param` are printed), or the
 *      job a `jobs watch` followed ended failed or cancelled
 *   2  bad invocation, missing API key, or the API could not be reached
 */
import { parseCommandArgs } from '../cli-args.util';
import { EXIT_FAILURE, EXIT_USAGE, UsageError, type CliIo } from '../cli.io';
import { ApiConnectionError, ApiRequestError, RemoteClient } from './client';

export const DEFAULT_API_URL = 'http://localhost:3000';

export const CONNECTION_OPTIONS = {
  'api-url': { type: 'string' },
  'base-url': { type: 'string' },
  'api-key': { type: 'string' },
  json: { type: 'boolean' },
} as const;

export const CONNECTION_HELP = `Connection (every remote command):
  --api-url <url>         API base URL (env LORAFLEET_API_URL, default ${DEFAULT_API_URL});
                          --base-url is an alias
  --api-key <key>         tenant API key (env LORAFLEET_API_KEY)
  --json                  print the API's JSON instead of text
  -h, --help              show this help

Exit codes: 0 ok; 1 the API refused the request; 2 bad usage, no API key or API unreachable.`;

type Options = Parameters<typeof parseCommandArgs>[1];

/** Parsed option values, by flag name (as written, e.g. `training-file`). */
export type OptionValues = Record<string, string | boolean | string[] | undefined>;

export interface RemoteContext {
  client: RemoteClient;
  json: boolean;
  values: OptionValues;
  positionals: string[];
  io: CliIo;
}

/** Resolves the base URL: flag, then env, then the default. Only http(s) URLs are accepted. */
export function resolveApiUrl(
  flag: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): string {
  const raw = flag ?? (env.LORAFLEET_API_URL?.trim() || DEFAULT_API_URL);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`--api-url must be an http(s) URL (got "${raw}")`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`--api-url must be an http(s) URL (got "${raw}")`);
  }
  return url.toString().replace(/\/+$/, '');
}

export function resolveApiKey(
  flag: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): string {
  const key = flag ?? env.LORAFLEET_API_KEY?.trim();
  if (!key) {
    throw new UsageError(
      'no API key: pass --api-key or set LORAFLEET_API_KEY ' +
        '(an operator creates one with "lorafleet admin db create-tenant <name>")',
    );
  }
  return key;
}

/**
 * Parses `args` with the command's own options plus the connection options, prints `usage`
 * on --help, builds the client and runs `body`. API and connection errors become a one-line
 * message on stderr and exit code 1 or 2; usage errors propagate to main (usage + exit 2).
 */
export async function runRemote(
  args: string[],
  io: CliIo,
  usage: string,
  options: Options,
  body: (ctx: RemoteContext) => Promise<number>,
): Promise<number> {
  const parsed = parseCommandArgs(args, { ...options, ...CONNECTION_OPTIONS });
  const values = parsed.values as OptionValues;
  if (values.help) {
    io.out(usage);
    return 0;
  }
  const apiUrlFlag = (values['api-url'] ?? values['base-url']) as string | undefined;
  const client = new RemoteClient({
    baseUrl: resolveApiUrl(apiUrlFlag),
    apiKey: resolveApiKey(values['api-key'] as string | undefined),
  });
  try {
    return await body({
      client,
      json: values.json === true,
      values,
      positionals: parsed.positionals,
      io,
    });
  } catch (error) {
    return reportRemoteError(error, io);
  }
}

/** The command could not do its job on valid input (exit 1, message only). */
export class CommandFailure extends Error {
  override readonly name = 'CommandFailure';
}

/** Prints an API or connection error and returns its exit code; rethrows anything else. */
export function reportRemoteError(error: unknown, io: CliIo): number {
  if (error instanceof CommandFailure) {
    io.err(`error: ${error.message}`);
    return EXIT_FAILURE;
  }
  if (error instanceof ApiRequestError) {
    io.err(`error: ${error.describe()}`);
    return EXIT_FAILURE;
  }
  if (error instanceof ApiConnectionError) {
    io.err(`error: ${error.message}\n(set --api-url or LORAFLEET_API_URL to point at the API)`);
    return EXIT_USAGE;
  }
  throw error;
}

/** Exactly `n` positionals, else a usage error naming them. */
export function expectPositionals(positionals: string[], names: string[]): string[] {
  if (positionals.length !== names.length) {
    const want = names.map((n) => `<${n}>`).join(' ');
    throw new UsageError(
      positionals.length < names.length
        ? `missing ${names
            .slice(positionals.length)
            .map((n) => `<${n}>`)
            .join(' ')}`
        : `expected ${want || 'no arguments'}, got extra "${positionals.slice(names.length).join(' ')}"`,
    );
  }
  return positionals;
}

/** A sub-command table: `lorafleet <group> <sub> …`. */
export type SubcommandHandler = (args: string[], io: CliIo) => Promise<number>;

export async function dispatchGroup(
  group: string,
  usage: string,
  table: Record<string, SubcommandHandler>,
  args: string[],
  io: CliIo,
): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === '--help' || sub === '-h' || sub === 'help') {
    io.out(usage);
    return 0;
  }
  if (sub === undefined) {
    io.err(`error: missing subcommand for "lorafleet ${group}"\n\n${usage}`);
    return EXIT_USAGE;
  }
  const handler = Object.prototype.hasOwnProperty.call(table, sub) ? table[sub] : undefined;
  if (!handler) {
    io.err(`error: unknown subcommand "${group} ${sub}"\n\n${usage}`);
    return EXIT_USAGE;
  }
  return handler(rest, io);
}

/** Usage errors thrown inside a subcommand print that subcommand's usage (main prints only the message). */
export function withUsage(usage: string, handler: SubcommandHandler): SubcommandHandler {
  return async (args, io) => {
    try {
      return await handler(args, io);
    } catch (error) {
      if (error instanceof UsageError) {
        io.err(`error: ${error.message}\n\n${usage}`);
        return EXIT_USAGE;
      }
      throw error;
    }
  };
}
