/**
 * `lorafleet chat --model <name> [prompt]` (issue 19): one chat turn against the API's
 * `/v1/chat/completions`, streamed token by token to stdout. The model is a base model or an
 * `ft:` model; the prompt comes from the argument, else from stdin.
 */
import { readFileSync } from 'node:fs';
import { EXIT_OK, UsageError, type CliIo } from '../cli.io';
import { parsePositiveInt, requireString } from '../cli-args.util';
import { CONNECTION_HELP, runRemote } from '../remote/remote-command';

export const CHAT_USAGE = `Usage: lorafleet chat --model <name> [prompt] [options]

Sends one user message to a served model and streams the answer. Without a prompt argument,
the prompt is read from stdin.

Options:
  --model <name>           a base model (e.g. lorafleet-tiny-llama) or your ft: model (required)
  --system <text>          a system message before the prompt
  --max-tokens <n>         most tokens to generate (default: what the context leaves)
  --temperature <t>        0 = greedy; 0..2 (default 1)
  --top-p <p>              nucleus mass in (0, 1] (default 1)
  --seed <n>               seeds sampling, for a repeatable answer
  --stop <text>            stop before this text (repeatable, at most 4)

Prints the answer to stdout and, on stderr, tokens, tokens/s and why it finished.

${CONNECTION_HELP}`;

interface ChatChunk {
  choices: { delta: { content?: string | null }; finish_reason: string | null }[];
  usage?: { prompt_tokens: number; completion_tokens: number } | null;
}

/** A number flag; the API checks the range and answers a 400 naming the parameter. */
function numberFlag(
  value: string | boolean | string[] | undefined,
  flag: string,
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (typeof value !== 'string' || value.trim() === '' || !Number.isFinite(n)) {
    throw new UsageError(`${flag} must be a number (got "${String(value)}")`);
  }
  return n;
}

export function runChat(args: string[], io: CliIo): Promise<number> {
  return runRemote(
    args,
    io,
    CHAT_USAGE,
    {
      model: { type: 'string' },
      system: { type: 'string' },
      'max-tokens': { type: 'string' },
      temperature: { type: 'string' },
      'top-p': { type: 'string' },
      seed: { type: 'string' },
      stop: { type: 'string', multiple: true },
    },
    async ({ client, values, positionals }) => {
      const model = requireString(values.model as string | undefined, '--model');
      if (positionals.length > 1) {
        throw new UsageError('give the prompt as one argument (quote it)');
      }
      const prompt = positionals[0] ?? readFileSync(0, 'utf8').trim();
      if (prompt === '') throw new UsageError('the prompt is empty');
      const maxTokens = values['max-tokens'];
      const system = values.system as string | undefined;
      const body = {
        model,
        messages: [
          ...(system === undefined ? [] : [{ role: 'system', content: system }]),
          { role: 'user', content: prompt },
        ],
        stream: true,
        stream_options: { include_usage: true },
        ...(typeof maxTokens === 'string'
          ? { max_tokens: parsePositiveInt(maxTokens, '--max-tokens') }
          : {}),
        temperature: numberFlag(values.temperature, '--temperature'),
        top_p: numberFlag(values['top-p'], '--top-p'),
        seed: numberFlag(values.seed, '--seed'),
        stop: values.stop,
      };
      const write = io.write?.bind(io);
      const started = performance.now();
      let firstTokenAt: number | undefined;
      let text = '';
      let finish: string | null = null;
      let completionTokens = 0;
      for await (const event of client.events('/v1/chat/completions', body)) {
        const chunk = event as ChatChunk;
        for (const choice of chunk.choices) {
          const delta = choice.delta.content ?? '';
          if (delta !== '') {
            firstTokenAt ??= performance.now();
            text += delta;
            write?.(delta);
          }
          finish = choice.finish_reason ?? finish;
        }
        if (chunk.usage) completionTokens = chunk.usage.completion_tokens;
      }
      // Without a raw writer (tests), the answer is printed whole at the end.
      if (write) write('\n');
      else io.out(text);
      const seconds = (performance.now() - started) / 1000;
      const firstMs = firstTokenAt === undefined ? null : Math.round(firstTokenAt - started);
      io.err(
        `[${completionTokens} tokens in ${seconds.toFixed(2)} s, ` +
          `${(completionTokens / Math.max(seconds, 1e-9)).toFixed(1)} tokens/s, ` +
          `first token ${firstMs === null ? '-' : `${firstMs} ms`}, finish: ${finish ?? 'none'}]`,
      );
      return EXIT_OK;
    },
  );
}
