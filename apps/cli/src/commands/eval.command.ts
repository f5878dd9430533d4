import { readFile } from 'node:fs/promises';

import { loadTokenizer, parseJsonlExamples, tokenizeExample } from '@lorafleet/data';
import {
  evaluateSequences,
  loadCausalLM,
  loadPeftAdapter,
  selectBackend,
} from '@lorafleet/lora-core';

import { parseCommandArgs, parsePositiveInt, requireString } from '../cli-args.util';
import { EXIT_OK, UsageError, type CliIo } from '../cli.io';
import { REQUESTED_BACKEND_HELP, parseRequestedBackend } from './backend.option';
import { checkAdapterLineage } from './adapter-lineage.util';

export const EVAL_USAGE = `Usage: lorafleet eval --model <dir> --data <jsonl> [options]

Completion-only loss, perplexity and mean token accuracy of the base model, or of the
base with a PEFT adapter, over a JSONL dataset (the same masking as training).

Options:
  --model <dir>             base model (config.json, model.safetensors, tokenizer.json)
  --adapter <dir>           apply a PEFT adapter directory
  --data <jsonl>            dataset to score
  --max-seq-length <n>      longest example kept, tail cut (default min(1024, positions))
  --batch-size <n>          examples per forward pass (default 8)
  --allow-base-mismatch     apply an adapter whose lineage names other base weights
  --backend <name>          ${REQUESTED_BACKEND_HELP}
  --json                    print {"loss", "perplexity", "mean_token_accuracy", ...}
  -h, --help                show this help`;

export async function runEval(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, {
    model: { type: 'string' },
    adapter: { type: 'string' },
    data: { type: 'string' },
    'max-seq-length': { type: 'string' },
    'batch-size': { type: 'string' },
    'allow-base-mismatch': { type: 'boolean' },
    backend: { type: 'string' },
    json: { type: 'boolean' },
  });
  if (values.help) {
    io.out(EVAL_USAGE);
    return EXIT_OK;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const modelDir = requireString(values.model, '--model');
  const dataPath = requireString(values.data, '--data');
  const batchSize =
    values['batch-size'] === undefined ? 8 : parsePositiveInt(values['batch-size'], '--batch-size');
  const requestedBackend = parseRequestedBackend(values.backend);

  const examples = parseJsonlExamples(await readFile(dataPath, 'utf8'));
  const tokenizer = await loadTokenizer(modelDir);
  const backend = await selectBackend(requestedBackend);
  const model = await loadCausalLM(modelDir);
  try {
    const positions = model.config.modelType === 'gpt2' ? model.config.maxPositions : 1024;
    const maxSeqLength =
      values['max-seq-length'] === undefined
        ? Math.min(1024, positions)
        : parsePositiveInt(values['max-seq-length'], '--max-seq-length');
    if (values.adapter !== undefined) {
      const warning = await checkAdapterLineage(
        values.adapter,
        model.baseModelSha256,
        values['allow-base-mismatch'] ?? false,
      );
      if (warning) io.err(warning);
      await loadPeftAdapter(model, 'cli', values.adapter);
    }
    const sequences = examples.map((example) =>
      tokenizeExample(example, tokenizer, { maxSeqLength }),
    );
    const metrics = await evaluateSequences(model, sequences, {
      padTokenId: tokenizer.padTokenId,
      batchSize,
    });
    const truncated = sequences.filter((s) => s.truncated).length;
    if (values.json) {
      io.out(
        JSON.stringify({
          loss: metrics.loss,
          perplexity: Math.exp(metrics.loss),
          mean_token_accuracy: metrics.meanTokenAccuracy,
          tokens: metrics.tokens,
          examples: metrics.examples,
          truncated_examples: truncated,
          adapter: values.adapter ?? null,
          backend,
        }),
      );
    } else {
      io.out(
        `loss ${metrics.loss.toFixed(4)} (perplexity ${Math.exp(metrics.loss).toFixed(2)}), mean token accuracy ` +
          `${(metrics.meanTokenAccuracy * 100).toFixed(2)}% over ${metrics.tokens} target tokens in ${metrics.examples} examples` +
          `${truncated > 0 ? ` (${truncated} truncated)` : ''}, ${values.adapter ? `adapter ${values.adapter}` : 'base model'} on ${backend}`,
      );
    }
    return EXIT_OK;
  } finally {
    model.dispose();
  }
}
