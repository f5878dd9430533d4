import { loadTokenizer, renderChat } from '@lorafleet/data';
import { generateText, loadCausalLM, loadPeftAdapter, selectBackend } from '@lorafleet/lora-core';

import { parseCommandArgs, parsePositiveInt, requireString } from '../cli-args.util';
import { EXIT_OK, UsageError, type CliIo } from '../cli.io';
import { REQUESTED_BACKEND_HELP, parseRequestedBackend } from './backend.option';
import { checkAdapterLineage } from './adapter-lineage.util';

export const GENERATE_USAGE = `Usage: lorafleet generate --model <dir> --prompt <text> [options]

Generates a completion with a KV cache, from the base model or with a PEFT adapter.

Options:
  --model <dir>             base model (config.json, model.safetensors, tokenizer.json)
  --adapter <dir>           apply a PEFT adapter directory
  --prompt <text>           the prompt, encoded as written (BOS added if the model adds one)
  --chat                    send --prompt as a user message through the chat template
  --max-new-tokens <n>      default 64
  --temperature <t>         0 = greedy (default 0)
  --top-p <p>               nucleus sampling mass in (0, 1] (default 1)
  --seed <n>                sampling seed (default 0)
  --allow-base-mismatch     apply an adapter whose lineage names other base weights
  --backend <name>          ${REQUESTED_BACKEND_HELP}
  --json                    print {"completion", "token_ids", "finish_reason", ...}
  -h, --help                show this help`;

function parseFloatIn(
  value: string,
  flag: string,
  min: number,
  max: number,
  minExclusive: boolean,
): number {
  const n = Number(value);
  if (
    value.trim() === '' ||
    !Number.isFinite(n) ||
    n > max ||
    (minExclusive ? n <= min : n < min)
  ) {
    throw new UsageError(
      `${flag} must be in ${minExclusive ? '(' : '['}${min}, ${max}] (got "${value}")`,
    );
  }
  return n;
}

export async function runGenerate(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, {
    model: { type: 'string' },
    adapter: { type: 'string' },
    prompt: { type: 'string' },
    chat: { type: 'boolean' },
    'max-new-tokens': { type: 'string' },
    temperature: { type: 'string' },
    'top-p': { type: 'string' },
    seed: { type: 'string' },
    'allow-base-mismatch': { type: 'boolean' },
    backend: { type: 'string' },
    json: { type: 'boolean' },
  });
  if (values.help) {
    io.out(GENERATE_USAGE);
    return EXIT_OK;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const modelDir = requireString(values.model, '--model');
  if (values.prompt === undefined) throw new UsageError('--prompt is required');
  const maxNewTokens =
    values['max-new-tokens'] === undefined
      ? 64
      : parsePositiveInt(values['max-new-tokens'], '--max-new-tokens');
  const temperature =
    values.temperature === undefined
      ? 0
      : parseFloatIn(values.temperature, '--temperature', 0, 100, false);
  const topP =
    values['top-p'] === undefined ? 1 : parseFloatIn(values['top-p'], '--top-p', 0, 1, true);
  if (values.seed !== undefined && !/^\d+$/.test(values.seed)) {
    throw new UsageError(`--seed must be an integer >= 0 (got "${values.seed}")`);
  }
  const seed = values.seed === undefined ? 0 : Number(values.seed);
  const requestedBackend = parseRequestedBackend(values.backend);

  const tokenizer = await loadTokenizer(modelDir);
  const prompt = values.chat
    ? renderChat([{ role: 'user', content: values.prompt }], tokenizer, {
        addGenerationPrompt: true,
      })
    : values.prompt;
  const backend = await selectBackend(requestedBackend);
  const model = await loadCausalLM(modelDir);
  try {
    if (values.adapter !== undefined) {
      const warning = await checkAdapterLineage(
        values.adapter,
        model.baseModelSha256,
        values['allow-base-mismatch'] ?? false,
      );
      if (warning) io.err(warning);
      await loadPeftAdapter(model, 'cli', values.adapter);
    }
    // A chat rendering already holds the template's BOS; pass ids so none is added twice.
    const result = await generateText(
      model,
      tokenizer,
      values.chat ? tokenizer.encode(prompt) : prompt,
      {
        maxNewTokens,
        temperature,
        topP,
        seed,
        adapter: values.adapter === undefined ? null : 'cli',
      },
    );
    const generated = result.tokenIds.length;
    if (values.json) {
      io.out(
        JSON.stringify({
          prompt,
          completion: result.text,
          token_ids: result.tokenIds,
          finish_reason: result.finishReason,
          prompt_tokens: result.promptTokens,
          completion_tokens: generated,
          backend,
          seconds: result.totalSeconds,
          tokens_per_second:
            result.totalSeconds > result.prefillSeconds
              ? (generated - 1) / (result.totalSeconds - result.prefillSeconds)
              : null,
        }),
      );
    } else {
      io.out(result.text);
    }
    return EXIT_OK;
  } finally {
    model.dispose();
  }
}
