import * as tf from '@tensorflow/tfjs';
import { loadTokenizer } from '@lorafleet/data';
import { initBackend, loadCausalLM, loadPeftAdapter } from '@lorafleet/lora-core';

import { parseCommandArgs, parseList, requireString } from '../cli-args.util';
import { EXIT_OK, UsageError, type CliIo } from '../cli.io';
import { checkAdapterLineage } from './adapter-lineage.util';
import { BACKEND_HELP, parseBackend } from './backend.option';

export const MODEL_FORWARD_USAGE = `Usage: lorafleet model forward <model-dir> (--ids 1,2,3 | --text "...") [options]

Runs the model on token ids (no tokenizer needed) or on text (encoded with the model's
tokenizer.json, no special tokens added) and prints the logits.

Options:
  --ids <i,j,...>           input token ids
  --text <string>           input text, tokenized with <model-dir>/tokenizer.json
  --adapter <peft-dir>      apply a PEFT adapter (adapter_config.json + adapter_model.safetensors)
  --allow-base-mismatch     apply an adapter whose lineage names other base weights
  ${BACKEND_HELP}
  --json                    print {"logits": [[...], ...]} with shape [T, vocab]
  -h, --help                show this help`;

function parseIds(value: string): number[] {
  return parseList(value, '--ids').map((s) => {
    if (!/^\d+$/.test(s) || !Number.isSafeInteger(Number(s))) {
      throw new UsageError(`--ids must be non-negative integers (got "${s}")`);
    }
    return Number(s);
  });
}

export async function runModelForward(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, {
    ids: { type: 'string' },
    text: { type: 'string' },
    adapter: { type: 'string' },
    'allow-base-mismatch': { type: 'boolean' },
    backend: { type: 'string' },
    json: { type: 'boolean' },
  });
  if (values.help) {
    io.out(MODEL_FORWARD_USAGE);
    return EXIT_OK;
  }
  if (positionals.length !== 1) throw new UsageError('expected exactly one <model-dir>');
  if (values.ids !== undefined && values.text !== undefined) {
    throw new UsageError('pass either --ids or --text, not both');
  }
  const backend = parseBackend(values.backend);
  const ids =
    values.text !== undefined
      ? (await loadTokenizer(positionals[0])).encode(values.text)
      : parseIds(requireString(values.ids, '--ids'));
  if (ids.length === 0) throw new UsageError('--text encodes to no tokens');

  await initBackend(backend);
  const model = await loadCausalLM(positionals[0]);
  try {
    const vocab = model.config.vocabSize;
    const outOfRange = ids.find((id) => id >= vocab);
    if (outOfRange !== undefined)
      throw new UsageError(`--ids: token ${outOfRange} is outside the vocabulary (size ${vocab})`);
    if (values.adapter !== undefined) {
      const warning = await checkAdapterLineage(
        values.adapter,
        model.baseModelSha256,
        values['allow-base-mismatch'] ?? false,
      );
      if (warning) io.err(warning);
      await loadPeftAdapter(model, 'cli', values.adapter);
    }
    const logits = tf.tidy(() => {
      const input = tf.tensor2d([ids], [1, ids.length], 'int32'); // [1, T]
      return tf.squeeze(model.forward(input), [0]); // [T, V]
    });
    const rows = (await logits.array()) as number[][];
    logits.dispose();
    if (values.json) {
      io.out(JSON.stringify(values.text !== undefined ? { ids, logits: rows } : { logits: rows }));
    } else {
      io.out(
        `logits: [${rows.length}, ${vocab}] on ${backend}${values.adapter ? ` with adapter ${values.adapter}` : ''}`,
      );
      const last = rows[rows.length - 1];
      const top = last
        .map((value, id) => ({ id, value }))
        .sort((a, b) => b.value - a.value)
        .slice(0, 5);
      io.out(
        `top next-token ids after the last position: ${top.map((t) => `${t.id} (${t.value.toFixed(4)})`).join(', ')}`,
      );
    }
    return EXIT_OK;
  } finally {
    model.dispose();
  }
}
