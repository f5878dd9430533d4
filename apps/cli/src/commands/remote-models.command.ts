/** `lorafleet models list|get`: base models and this tenant's fine-tuned models (`/v1/models`). */
import { EXIT_OK, type CliIo } from '../cli.io';
import { isoTime, keyValues, table } from '../remote/format';
import {
  CONNECTION_HELP,
  dispatchGroup,
  expectPositionals,
  runRemote,
  withUsage,
} from '../remote/remote-command';

interface ModelObject {
  id: string;
  object: 'model';
  created: number;
  owned_by: string;
}

export const MODELS_USAGE = `Usage: lorafleet models <command> [options]

Commands:
  list                    base models (owned by lorafleet) and your fine-tuned models (ft:…)
  get <model-id>          one model

The local "lorafleet model inspect|forward" commands work on model directories instead.

Run "lorafleet models <command> --help" for a command's options.`;

const LIST_USAGE = `Usage: lorafleet models list [options]

${CONNECTION_HELP}`;

const GET_USAGE = `Usage: lorafleet models get <model-id> [options]

${CONNECTION_HELP}`;

async function list(args: string[], io: CliIo): Promise<number> {
  return runRemote(args, io, LIST_USAGE, {}, async (ctx) => {
    expectPositionals(ctx.positionals, []);
    const page = await ctx.client.json<{ data: ModelObject[] }>('GET', '/v1/models');
    io.out(
      ctx.json
        ? JSON.stringify(page, null, 2)
        : page.data.length === 0
          ? 'No models.'
          : table(
              ['ID', 'OWNED BY', 'CREATED'],
              page.data.map((m) => [m.id, m.owned_by, isoTime(m.created)]),
            ),
    );
    return EXIT_OK;
  });
}

async function get(args: string[], io: CliIo): Promise<number> {
  return runRemote(args, io, GET_USAGE, {}, async (ctx) => {
    const [id] = expectPositionals(ctx.positionals, ['model-id']);
    // Model ids may hold a slash (org/name) and colons (ft:…); the route takes the rest of the path.
    const model = await ctx.client.json<ModelObject>(
      'GET',
      `/v1/models/${id.split('/').map(encodeURIComponent).join('/')}`,
    );
    io.out(
      ctx.json
        ? JSON.stringify(model, null, 2)
        : keyValues([
            ['id', model.id],
            ['owned_by', model.owned_by],
            ['created', isoTime(model.created)],
          ]),
    );
    return EXIT_OK;
  });
}

export function runModels(args: string[], io: CliIo): Promise<number> {
  return dispatchGroup(
    'models',
    MODELS_USAGE,
    { list: withUsage(LIST_USAGE, list), get: withUsage(GET_USAGE, get) },
    args,
    io,
  );
}
