/**
 * `lorafleet` command-line entry. Local ML commands (model inspect/forward, merge) run
 * lora-core in-process; `admin db …` talks to Postgres. Each command module is loaded on
 * demand, so `model inspect` never loads TypeORM and `admin db` never loads tfjs.
 */
import { EXIT_FAILURE, EXIT_USAGE, UsageError, processIo, type CliIo } from './cli.io';

const USAGE = `Usage: lorafleet <command> [options]

Commands:
  model inspect <model-dir>        architecture and PEFT-style parameter counts (config.json only)
  model forward <model-dir> --ids  logits for token ids, optionally with a PEFT adapter
  merge --model --adapter --out    merge a PEFT adapter into a Hugging Face model directory
  train --model --train --out      fine-tune a LoRA adapter on JSONL (checkpoints, --resume)
  generate --model --prompt        generate text, optionally with a PEFT adapter
  eval --model --data              completion-only loss and token accuracy on JSONL
  admin db <migrate|check|create-tenant>
                                   operator commands against Postgres (needs DATABASE_URL)
  admin create-key --tenant <name> [--admin | --fleet-admin] [--json]
                                   issue an API key for a tenant (prints the key once)
  admin revoke-key <key-or-id>     revoke an API key (answers 401 from then on)

Remote commands (talk to the REST API: --api-url/LORAFLEET_API_URL, --api-key/LORAFLEET_API_KEY):
  files <upload|list|get|content|delete>
                                   training files
  jobs <create|list|get|watch|wait|events|cancel|pause|resume>
                                   fine-tuning jobs; watch shows a progress bar until the end
  adapters <get|download>          trained PEFT adapters (download --out <dir>)
  models <list|get>                base and fine-tuned models
  webhooks <create|list|get|delete|deliveries|redeliver>
                                   signed job-event webhooks and their delivery logs
  chat --model <name> [prompt]     one chat turn with a served model, streamed (stdin without prompt)

Run "lorafleet <command> --help" for a command's options.`;

const ADMIN_USAGE = `Usage: lorafleet admin <db|create-key|revoke-key> ...

  db <migrate|check|create-tenant>                     schema and tenants
  create-key --tenant <name-or-id> [--admin | --fleet-admin] [--json]
                                                       issue an API key
  revoke-key <key-or-id>                               revoke an API key`;

const MODEL_USAGE = `Usage: lorafleet model <inspect|forward> ...

  inspect <model-dir>   architecture and parameter counts
  forward <model-dir>   logits for token ids`;

type Handler = (args: string[], io: CliIo) => Promise<number>;

async function route(
  argv: string[],
): Promise<{ handler: Handler; args: string[]; usage: string } | undefined> {
  const [command, sub, ...rest] = argv;
  switch (command) {
    case 'model':
      if (sub === 'inspect') {
        const m = await import('./commands/model-inspect.command');
        return { handler: m.runModelInspect, args: rest, usage: m.MODEL_INSPECT_USAGE };
      }
      if (sub === 'forward') {
        const m = await import('./commands/model-forward.command');
        return { handler: m.runModelForward, args: rest, usage: m.MODEL_FORWARD_USAGE };
      }
      return { handler: usageOnly(MODEL_USAGE, sub), args: [], usage: MODEL_USAGE };
    case 'merge': {
      const m = await import('./commands/merge.command');
      return { handler: m.runMerge, args: argv.slice(1), usage: m.MERGE_USAGE };
    }
    case 'train': {
      const m = await import('./commands/train.command');
      return { handler: m.runTrain, args: argv.slice(1), usage: m.TRAIN_USAGE };
    }
    case 'generate': {
      const m = await import('./commands/generate.command');
      return { handler: m.runGenerate, args: argv.slice(1), usage: m.GENERATE_USAGE };
    }
    case 'eval': {
      const m = await import('./commands/eval.command');
      return { handler: m.runEval, args: argv.slice(1), usage: m.EVAL_USAGE };
    }
    case 'admin':
      if (sub === 'db') {
        const m = await import('./commands/admin-db.command');
        return { handler: (args) => m.runAdminDb(args), args: rest, usage: '' };
      }
      if (sub === 'create-key') {
        const m = await import('./commands/admin-keys.command');
        return { handler: m.runCreateKey, args: rest, usage: m.CREATE_KEY_USAGE };
      }
      if (sub === 'revoke-key') {
        const m = await import('./commands/admin-keys.command');
        return { handler: m.runRevokeKey, args: rest, usage: m.REVOKE_KEY_USAGE };
      }
      return { handler: usageOnly(ADMIN_USAGE, sub), args: [], usage: '' };
    case 'chat': {
      const m = await import('./commands/remote-chat.command');
      return { handler: m.runChat, args: argv.slice(1), usage: m.CHAT_USAGE };
    }
    case 'files':
    case 'jobs':
    case 'adapters':
    case 'models':
    case 'webhooks':
      return { handler: await remoteGroup(command), args: argv.slice(1), usage: '' };
    default:
      return undefined;
  }
}

/** The remote command groups (each prints its own usage on bad input). */
async function remoteGroup(
  command: 'files' | 'jobs' | 'adapters' | 'models' | 'webhooks',
): Promise<Handler> {
  switch (command) {
    case 'files':
      return (await import('./commands/remote-files.command')).runFiles;
    case 'jobs':
      return (await import('./commands/remote-jobs.command')).runJobs;
    case 'adapters':
      return (await import('./commands/remote-adapters.command')).runAdapters;
    case 'models':
      return (await import('./commands/remote-models.command')).runModels;
    case 'webhooks':
      return (await import('./commands/remote-webhooks.command')).runWebhooks;
  }
}

/** A group command without a valid subcommand: help exits 0, anything else is a usage error. */
function usageOnly(usage: string, sub: string | undefined): Handler {
  return (_args, io) => {
    if (sub === '--help' || sub === '-h') {
      io.out(usage);
      return Promise.resolve(0);
    }
    io.err(
      `${sub === undefined ? 'missing subcommand' : `unknown subcommand "${sub}"`}\n\n${usage}`,
    );
    return Promise.resolve(EXIT_USAGE);
  };
}

/** Runs the CLI and returns its exit code (never calls process.exit, for testability). */
export async function main(argv: string[], io: CliIo = processIo): Promise<number> {
  const [command] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    if (command === undefined) io.err(USAGE);
    else io.out(USAGE);
    return command === undefined ? EXIT_USAGE : 0;
  }
  const routed = await route(argv);
  if (!routed) {
    io.err(`unknown command "${command}"\n\n${USAGE}`);
    return EXIT_USAGE;
  }
  try {
    return await routed.handler(routed.args, io);
  } catch (error) {
    if (error instanceof UsageError) {
      io.err(`error: ${error.message}${routed.usage ? `\n\n${routed.usage}` : ''}`);
      return EXIT_USAGE;
    }
    io.err(`error: ${(error as Error).message ?? String(error)}`);
    return EXIT_FAILURE;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`fatal: ${String(error)}\n`);
      process.exitCode = EXIT_FAILURE;
    },
  );
}
