import { existsSync, readdirSync } from 'node:fs';
import { resolve } from 'node:path';

import {
  loadCausalLM,
  loadPeftAdapter,
  mergeAdapter,
  saveHfModel,
  selectBackend,
} from '@lorafleet/lora-core';

import { parseCommandArgs, requireString } from '../cli-args.util';
import { EXIT_OK, UsageError, type CliIo } from '../cli.io';
import { checkAdapterLineage } from './adapter-lineage.util';
import { REQUESTED_BACKEND_HELP, parseRequestedBackend } from './backend.option';

export const MERGE_USAGE = `Usage: lorafleet merge --model <dir> --adapter <dir> --out <dir> [options]

Folds a PEFT LoRA adapter into the base weights (W = W0 + scaling * B A) and writes a
Hugging Face model directory (config.json, model.safetensors, tokenizer files) that loads
with transformers' from_pretrained and needs no PEFT at inference.

Options:
  --model <dir>             base model directory (config.json + model.safetensors)
  --adapter <dir>           PEFT adapter directory
  --out <dir>               output directory (must be empty or absent unless --force)
  --force                   write into a non-empty --out
  --allow-base-mismatch     merge an adapter whose lineage names other base weights
  --backend <name>          ${REQUESTED_BACKEND_HELP}
  -h, --help                show this help`;

export async function runMerge(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, {
    model: { type: 'string' },
    adapter: { type: 'string' },
    out: { type: 'string' },
    force: { type: 'boolean' },
    'allow-base-mismatch': { type: 'boolean' },
    backend: { type: 'string' },
  });
  if (values.help) {
    io.out(MERGE_USAGE);
    return EXIT_OK;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const modelDir = requireString(values.model, '--model');
  const adapterDir = requireString(values.adapter, '--adapter');
  const outDir = requireString(values.out, '--out');
  // The training commands' backend choice: a merge is a few additions and matmuls, and the
  // weights are read back asynchronously (hfStateDict), so every backend, webgpu too, works.
  const requestedBackend = parseRequestedBackend(values.backend);
  if (resolve(outDir) === resolve(modelDir)) throw new UsageError('--out must differ from --model');
  if (existsSync(outDir) && readdirSync(outDir).length > 0 && !values.force) {
    throw new UsageError(`--out ${outDir} is not empty (pass --force to overwrite)`);
  }

  const backend = await selectBackend(requestedBackend);
  const model = await loadCausalLM(modelDir);
  try {
    const warning = await checkAdapterLineage(
      adapterDir,
      model.baseModelSha256,
      values['allow-base-mismatch'] ?? false,
    );
    if (warning) io.err(warning);
    const cfg = await loadPeftAdapter(model, 'merge', adapterDir);
    mergeAdapter(model, 'merge');
    await saveHfModel(model, outDir, { companionsFrom: modelDir });
    io.out(
      `merged ${adapterDir} (r=${cfg.r}, alpha=${cfg.alpha}, ${model.resolveTargets(cfg).length} layers) into ${modelDir} -> ${outDir} on ${backend}`,
    );
    return EXIT_OK;
  } finally {
    model.dispose();
  }
}
