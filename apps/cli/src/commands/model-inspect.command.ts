import {
  countBaseParameters,
  countLoraTargets,
  countParameters,
  defaultTargetModules,
  formatThousands,
  formatTrainableParameters,
  readModelConfig,
  type LoraConfig,
  type ModelConfig,
} from '@lorafleet/lora-core';

import {
  parseCommandArgs,
  parseList,
  parsePositiveInt,
  parsePositiveNumber,
} from '../cli-args.util';
import { EXIT_OK, UsageError, type CliIo } from '../cli.io';

export const MODEL_INSPECT_USAGE = `Usage: lorafleet model inspect <model-dir> [options]

Reads only <model-dir>/config.json (no weights) and prints the architecture and the
parameter counts exactly as PEFT's print_trainable_parameters would.

Options:
  --r <n>                   LoRA rank (default 8, PEFT's default)
  --alpha <a>               lora_alpha (default 8, PEFT's default)
  --target-modules <a,b>    module names, or all-linear (default: PEFT's default for the model type)
  --rslora                  use rsLoRA scaling alpha/sqrt(r)
  --json                    print a JSON object instead of text
  -h, --help                show this help`;

function describeArchitecture(config: ModelConfig): Record<string, number | string | boolean> {
  const common = {
    model_type: config.modelType,
    vocab_size: config.vocabSize,
    hidden_size: config.hiddenSize,
    num_layers: config.numLayers,
    num_heads: config.numHeads,
    max_positions: config.maxPositions,
    tie_word_embeddings: config.tieWordEmbeddings,
  };
  return config.modelType === 'gpt2'
    ? { ...common, inner_size: config.innerSize, activation: config.activation }
    : {
        ...common,
        num_key_value_heads: config.numKeyValueHeads,
        head_dim: config.headDim,
        intermediate_size: config.intermediateSize,
        rope_theta: config.ropeTheta,
      };
}

export async function runModelInspect(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, {
    r: { type: 'string' },
    alpha: { type: 'string' },
    'target-modules': { type: 'string' },
    rslora: { type: 'boolean' },
    json: { type: 'boolean' },
  });
  if (values.help) {
    io.out(MODEL_INSPECT_USAGE);
    return EXIT_OK;
  }
  if (positionals.length !== 1) throw new UsageError('expected exactly one <model-dir>');
  const config = await readModelConfig(positionals[0]);
  const targets = values['target-modules'];
  const lora: LoraConfig = {
    r: values.r === undefined ? 8 : parsePositiveInt(values.r, '--r'),
    alpha: values.alpha === undefined ? 8 : parsePositiveNumber(values.alpha, '--alpha'),
    dropout: 0,
    targetModules:
      targets === undefined
        ? defaultTargetModules(config.modelType)
        : targets === 'all-linear'
          ? 'all-linear'
          : parseList(targets, '--target-modules'),
    useRslora: values.rslora ?? false,
  };
  // Counted, not listed: a config's layer count must not decide what inspect allocates.
  const modules = countLoraTargets(config, lora).modules;
  if (modules === 0) {
    throw new UsageError(
      `--target-modules ${JSON.stringify(lora.targetModules)} match no linear layer of this model`,
    );
  }
  const count = countParameters(config, lora);
  const line = formatTrainableParameters(count);
  if (values.json) {
    io.out(
      JSON.stringify({
        architecture: describeArchitecture(config),
        base_params: countBaseParameters(config),
        lora: {
          r: lora.r,
          lora_alpha: lora.alpha,
          use_rslora: lora.useRslora,
          target_modules: lora.targetModules,
          targeted_layers: modules,
        },
        trainable_params: count.trainable,
        all_params: count.all,
        trainable_percent: count.percent,
        line,
      }),
    );
    return EXIT_OK;
  }
  const arch = describeArchitecture(config);
  io.out(
    Object.entries(arch)
      .map(([k, v]) => `${k}: ${String(v)}`)
      .join('\n'),
  );
  io.out(`base params: ${formatThousands(countBaseParameters(config))}`);
  io.out(
    `lora: r=${lora.r} alpha=${lora.alpha}${lora.useRslora ? ' rslora' : ''} targets=${JSON.stringify(lora.targetModules)} (${modules} layers)`,
  );
  io.out(line);
  return EXIT_OK;
}
