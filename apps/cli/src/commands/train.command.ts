import { existsSync, readdirSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';

import {
  LORAFLEET_VERSION,
  LineageSchema,
  type FineTuneSpec,
  type FineTuneSpecRequest,
} from '@lorafleet/contracts';
import {
  FineTuneSpecError,
  hashBaseModel,
  isOutOfMemoryError,
  outOfMemoryMessage,
  parseJsonlExamples,
  parsePreferenceJsonl,
  readModelFacts,
  resolveFineTuneSpec,
  truncationWarning,
} from '@lorafleet/data';
import {
  LR_SCHEDULERS,
  TRUNCATION_WARNING_SHARE,
  TrainingAbortedError,
  TrainingConfigError,
  latestCheckpoint,
  listCheckpointFiles,
  loraConfigOf,
  memoryAdvice,
  memoryLimitMbFromEnv,
  pruneCheckpoints,
  readModelConfig,
  runFineTune,
  savePeftAdapter,
  selectBackend,
  writeCheckpointFile,
  type FineTunePreflight,
  type FineTuneResult,
  type LrSchedulerType,
  type TrainingProgress,
} from '@lorafleet/lora-core';
import { ZodError } from 'zod';

import {
  parseCommandArgs,
  parseList,
  parsePositiveInt,
  parsePositiveNumber,
  requireString,
} from '../cli-args.util';
import { EXIT_OK, UsageError, type CliIo } from '../cli.io';
import { REQUESTED_BACKEND_HELP, parseRequestedBackend } from './backend.option';

export const TRAIN_USAGE = `Usage: lorafleet train --model <dir> --train <jsonl> --out <peft-dir> [options]

Fine-tunes a LoRA adapter on a JSONL dataset ({"prompt","completion"}, {"messages":[...]}
or {"text"} lines; the loss covers completion/assistant tokens only) and writes a PEFT
adapter directory plus lorafleet.json (lineage) and training_metrics.csv. With --method dpo
it trains on preference pairs instead (OpenAI's DPO lines: {"input":{"messages":[...]},
"preferred_output":[...],"non_preferred_output":[...]}).

The flags build the same spec a REST job resolves (the same names, ranges and defaults), so a
run here and a job with the same inputs train the same adapter on the same backend.

Data and model:
  --model <dir>                 base model (config.json, model.safetensors, tokenizer.json)
  --train <jsonl>               training data
  --validation <jsonl>          validation data: final loss/accuracy and sample generations
  --method <supervised|dpo>     what to optimise (default supervised); dpo: Direct
                                Preference Optimization, the reference policy being the
                                base model with the adapter switched off
  --beta <b>                    DPO's beta, 0 < b <= 10 (default 0.1; only with --method dpo)
  --out <dir>                   output directory (must be empty or absent unless --force)
  --max-seq-length <n>          longest example kept, tail cut (default min(1024, context))
  --gradient-checkpointing      recompute each block's activations in backward: less memory,
                                about one more forward pass of time

LoRA:
  --r <n>                       rank (default 8)
  --alpha <a>                   lora_alpha (default 16)
  --dropout <p>                 lora_dropout (default 0)
  --target-modules <a,b|all-linear>  modules to adapt (default: PEFT's for the architecture)
  --use-rslora                  scale by alpha/sqrt(r)

Optimisation (n_epochs and batch_size default to OpenAI's "auto" heuristic):
  --epochs <n>                  passes over the data (default auto: ~3, 100 to 25,000 passes)
  --max-steps <n>               stop after n optimizer steps (the schedule decays over them)
  --batch-size <n>              examples per micro-batch (default auto: ~0.2% of the data)
  --grad-accum <n>              micro-batches per optimizer step (default 1)
  --learning-rate <lr>          peak learning rate (default multiplier × the model's base rate: lorafleet-model.json, else 2e-4)
  --learning-rate-multiplier <m>  OpenAI's learning_rate_multiplier (default 1)
  --lr-scheduler <name>         ${LR_SCHEDULERS.join(' | ')} (default linear)
  --warmup-steps <n>            linear warmup (default 0)
  --weight-decay <w>            AdamW decoupled weight decay (default 0)
  --max-grad-norm <g>           global-norm clipping, 0 disables (default 1)
  --seed <n>                    seeds LoRA init, shuffling and dropout (default random,
                                recorded in lorafleet.json)
  --eval-every <n>              validation loss every n steps
  --early-stopping <patience>   stop after <patience> evaluations without improvement and
                                keep the best adapter (needs --validation and --eval-every)

Checkpoints:
  --checkpoint-dir <dir>        write checkpoints here
  --checkpoint-every <n>        every n steps (default 50 with --checkpoint-dir)
  --checkpoint-every-seconds <t>  also when t seconds passed since the last one
  --checkpoint-keep <k>         keep the newest k files (default 3)
  --resume                      continue from the newest checkpoint in --checkpoint-dir

Other:
  --backend <name>              ${REQUESTED_BACKEND_HELP}
                                The pre-flight refuses (exit 1) a run whose memory estimate
                                exceeds LORAFLEET_MEMORY_LIMIT_MB (default: the cgroup
                                limit, else 90% of RAM), naming what to change.
  --force                       write into a non-empty --out
  --json                        print the final summary as JSON
  --quiet                       no progress output
  -h, --help                    show this help

Ctrl-C stops after the current step, writes a checkpoint (with --checkpoint-dir) and
exits 130; rerun with --resume to continue.`;

/** Exit code after an interrupt (128 + SIGINT), as shells report it. */
const EXIT_INTERRUPTED = 130;

function parseNonNegative(value: string, flag: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) {
    throw new UsageError(`${flag} must be a number >= 0 (got "${value}")`);
  }
  return n;
}

function parseNonNegativeInt(value: string, flag: string): number {
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
    throw new UsageError(`${flag} must be an integer >= 0 (got "${value}")`);
  }
  return Number(value);
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${rest}` : `${m}:${rest}`;
}

/** One progress line: a bar, the step, epoch, loss, lr, throughput and ETA. */
export function progressLine(p: TrainingProgress, width = 24): string {
  const filled = Math.round((p.step / p.totalSteps) * width);
  const bar = `${'#'.repeat(filled)}${'-'.repeat(width - filled)}`;
  // DPO: the reward margin and the share of pairs ranked right, instead of token accuracy.
  const accuracy = p.dpo
    ? `margin ${p.dpo.rewardsMargin.toFixed(4)} reward acc ${(p.dpo.rewardsAccuracy * 100).toFixed(1)}%`
    : `acc ${((p.meanTokenAccuracy ?? Number.NaN) * 100).toFixed(1)}%`;
  return (
    `[${bar}] ${p.step}/${p.totalSteps} epoch ${p.epoch.toFixed(2)}/${p.totalEpochs.toFixed(2)} ` +
    `loss ${p.loss.toFixed(4)} ${accuracy} lr ${p.learningRate.toExponential(2)} ` +
    `${Math.round(p.tokensPerSecond)} tok/s ETA ${formatDuration(p.etaSeconds)}`
  );
}

function summaryText(
  result: FineTuneResult,
  outDir: string,
  backend: string,
  seconds: number,
): string {
  const lines = [
    `trained ${result.steps}/${result.totalSteps} steps (${result.epochs.toFixed(2)} epochs, ${result.stopReason}) on ${backend} in ${formatDuration(seconds)}`,
    `  train loss ${result.finalTrainLoss.toFixed(4)}, ${result.trainedTokens} tokens (${result.trainedTargetTokens} trained targets)`,
  ];
  if (result.resumedFromStep !== null) lines.push(`  resumed from step ${result.resumedFromStep}`);
  if (result.validation?.dpo) {
    const { dpo } = result.validation;
    lines.push(
      `  validation DPO loss ${result.validation.loss.toFixed(4)}, reward margin ${dpo.rewardsMargin.toFixed(4)} ` +
        `(chosen ${dpo.rewardsChosen.toFixed(4)}, rejected ${dpo.rewardsRejected.toFixed(4)}), ` +
        `reward accuracy ${(dpo.rewardsAccuracy * 100).toFixed(1)}% over ${result.validation.examples} pairs`,
    );
  } else if (result.validation) {
    lines.push(
      `  validation loss ${result.validation.loss.toFixed(4)} (perplexity ${Math.exp(result.validation.loss).toFixed(2)}), ` +
        `mean token accuracy ${((result.validation.meanTokenAccuracy ?? Number.NaN) * 100).toFixed(1)}% over ${result.validation.tokens} tokens`,
    );
  }
  if (result.bestStep !== null && result.restoredBest) {
    lines.push(`  kept the best adapter, from step ${result.bestStep}`);
  }
  for (const sample of result.samples) {
    lines.push(
      `  sample: ${JSON.stringify(sample.prompt)} -> ${JSON.stringify(sample.completion)}`,
    );
  }
  lines.push(
    `  wrote ${outDir} (adapter_config.json, adapter_model.safetensors, lorafleet.json, training_metrics.csv)`,
  );
  return lines.join('\n');
}

export async function runTrain(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, {
    model: { type: 'string' },
    train: { type: 'string' },
    validation: { type: 'string' },
    method: { type: 'string' },
    beta: { type: 'string' },
    out: { type: 'string' },
    'max-seq-length': { type: 'string' },
    'gradient-checkpointing': { type: 'boolean' },
    r: { type: 'string' },
    alpha: { type: 'string' },
    dropout: { type: 'string' },
    'target-modules': { type: 'string' },
    'use-rslora': { type: 'boolean' },
    epochs: { type: 'string' },
    'max-steps': { type: 'string' },
    'batch-size': { type: 'string' },
    'grad-accum': { type: 'string' },
    'learning-rate': { type: 'string' },
    'learning-rate-multiplier': { type: 'string' },
    'lr-scheduler': { type: 'string' },
    'warmup-steps': { type: 'string' },
    'weight-decay': { type: 'string' },
    'max-grad-norm': { type: 'string' },
    seed: { type: 'string' },
    'eval-every': { type: 'string' },
    'early-stopping': { type: 'string' },
    'checkpoint-dir': { type: 'string' },
    'checkpoint-every': { type: 'string' },
    'checkpoint-every-seconds': { type: 'string' },
    'checkpoint-keep': { type: 'string' },
    resume: { type: 'boolean' },
    backend: { type: 'string' },
    force: { type: 'boolean' },
    json: { type: 'boolean' },
    quiet: { type: 'boolean' },
  });
  if (values.help) {
    io.out(TRAIN_USAGE);
    return EXIT_OK;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const modelDir = requireString(values.model, '--model');
  const trainPath = requireString(values.train, '--train');
  const outDir = requireString(values.out, '--out');
  const opt = <T>(
    value: string | undefined,
    parse: (v: string, flag: string) => T,
    flag: string,
  ) => (value === undefined ? undefined : parse(value, flag));

  const scheduler = values['lr-scheduler'];
  if (scheduler !== undefined && !(LR_SCHEDULERS as readonly string[]).includes(scheduler)) {
    throw new UsageError(
      `--lr-scheduler must be one of ${LR_SCHEDULERS.join(', ')} (got "${scheduler}")`,
    );
  }
  const method = values.method ?? 'supervised';
  if (method !== 'supervised' && method !== 'dpo') {
    throw new UsageError(`--method must be supervised or dpo (got "${method}")`);
  }
  if (values.beta !== undefined && method !== 'dpo') {
    throw new UsageError('--beta needs --method dpo');
  }
  const targets = values['target-modules'];
  // The REST request's shape: the flags resolve into the spec exactly as a job's body does.
  const request: FineTuneSpecRequest = {
    seed: opt(values.seed, parseNonNegativeInt, '--seed'),
    method:
      method === 'dpo'
        ? { type: 'dpo', beta: opt(values.beta, parsePositiveNumber, '--beta') }
        : { type: 'supervised' },
    hyperparameters: {
      n_epochs: opt(values.epochs, parsePositiveInt, '--epochs'),
      batch_size: opt(values['batch-size'], parsePositiveInt, '--batch-size'),
      learning_rate_multiplier: opt(
        values['learning-rate-multiplier'],
        parsePositiveNumber,
        '--learning-rate-multiplier',
      ),
    },
    lora: {
      r: opt(values.r, parsePositiveInt, '--r'),
      alpha: opt(values.alpha, parsePositiveNumber, '--alpha'),
      dropout: opt(values.dropout, parseNonNegative, '--dropout'),
      target_modules:
        targets === undefined || targets === 'all-linear'
          ? targets
          : parseList(targets, '--target-modules'),
      use_rslora: values['use-rslora'],
    },
    training: {
      learning_rate: opt(values['learning-rate'], parsePositiveNumber, '--learning-rate'),
      max_seq_length: opt(values['max-seq-length'], parsePositiveInt, '--max-seq-length'),
      lr_scheduler: scheduler as LrSchedulerType | undefined,
      warmup_steps: opt(values['warmup-steps'], parseNonNegativeInt, '--warmup-steps'),
      weight_decay: opt(values['weight-decay'], parseNonNegative, '--weight-decay'),
      gradient_accumulation_steps: opt(values['grad-accum'], parsePositiveInt, '--grad-accum'),
      max_grad_norm: opt(values['max-grad-norm'], parseNonNegative, '--max-grad-norm'),
      eval_every_steps: opt(values['eval-every'], parsePositiveInt, '--eval-every'),
      max_steps: opt(values['max-steps'], parsePositiveInt, '--max-steps'),
      gradient_checkpointing: values['gradient-checkpointing'],
    },
  };
  const patience = opt(values['early-stopping'], parsePositiveInt, '--early-stopping');
  if (
    patience !== undefined &&
    (values.validation === undefined || request.training?.eval_every_steps === undefined)
  ) {
    throw new UsageError('--early-stopping needs --validation and --eval-every');
  }

  const checkpointDir = values['checkpoint-dir'];
  const checkpointEvery = opt(values['checkpoint-every'], parsePositiveInt, '--checkpoint-every');
  const checkpointEverySeconds = opt(
    values['checkpoint-every-seconds'],
    parsePositiveNumber,
    '--checkpoint-every-seconds',
  );
  const checkpointKeep = opt(values['checkpoint-keep'], parsePositiveInt, '--checkpoint-keep') ?? 3;
  if (
    checkpointDir === undefined &&
    (values.resume || checkpointEvery !== undefined || checkpointEverySeconds !== undefined)
  ) {
    throw new UsageError('--resume and --checkpoint-every need --checkpoint-dir');
  }
  if (resolve(outDir) === resolve(modelDir)) throw new UsageError('--out must differ from --model');
  if (existsSync(outDir) && readdirSync(outDir).length > 0 && !values.force) {
    throw new UsageError(`--out ${outDir} is not empty (pass --force to overwrite)`);
  }
  const requestedBackend = parseRequestedBackend(values.backend);
  let memoryLimitMb: number;
  try {
    memoryLimitMb = memoryLimitMbFromEnv();
  } catch (error) {
    if (error instanceof TrainingConfigError) throw new UsageError(error.message);
    throw error;
  }

  let resumeFrom: Uint8Array | null = null;
  if (checkpointDir !== undefined) {
    if (values.resume) {
      const latest = await latestCheckpoint(checkpointDir, (path, reason) =>
        io.err(`skipping unreadable checkpoint ${path}: ${reason}`),
      );
      if (latest) {
        resumeFrom = latest.blob;
        io.err(
          `resuming from ${latest.path} (step ${latest.state.step}/${latest.state.totalSteps})`,
        );
      } else {
        io.err(`no checkpoint in ${checkpointDir}; starting from step 0`);
      }
    } else if ((await listCheckpointFiles(checkpointDir)).length > 0) {
      throw new UsageError(
        `--checkpoint-dir ${checkpointDir} already holds checkpoints; pass --resume to continue from them or use an empty directory`,
      );
    }
  }

  const [trainJsonl, validationJsonl] = await Promise.all([
    readFile(trainPath),
    values.validation === undefined ? Promise.resolve(null) : readFile(values.validation),
  ]);
  const spec = resolveSpec(request, modelDir, trainJsonl);
  const backend = await selectBackend(requestedBackend);

  // Ctrl-C / SIGTERM: finish the step, checkpoint, exit 130 (a second signal kills at once).
  const controller = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    if (controller.signal.aborted) process.exit(EXIT_INTERRUPTED);
    io.err(`\n${signal}: stopping after the current step`);
    controller.abort(new Error(`interrupted by ${signal}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const tty = process.stderr.isTTY === true && !values.quiet;
  let lastLine = 0;
  let preflightSeen: FineTunePreflight | null = null;
  const started = performance.now();
  try {
    const result = await runFineTune({
      model: modelDir,
      trainJsonl,
      validationJsonl,
      spec,
      memoryLimitMb,
      earlyStopping: patience === undefined ? undefined : { patience },
      resumeFrom,
      signal: controller.signal,
      checkpoint:
        checkpointDir === undefined
          ? undefined
          : {
              everySteps:
                checkpointEvery ?? (checkpointEverySeconds === undefined ? 50 : undefined),
              everySeconds: checkpointEverySeconds,
              sink: async ({ blob, step }) => {
                await writeCheckpointFile(checkpointDir, step, blob);
                await pruneCheckpoints(checkpointDir, checkpointKeep);
              },
            },
      lineage: { backend },
      onPreflight: (p) => {
        preflightSeen = p;
        // A warning, not progress: printed even with --quiet.
        const warning = truncationWarning(p, TRUNCATION_WARNING_SHARE);
        if (warning !== null) io.err(`warning: ${warning}`);
        if (values.quiet) return;
        io.err(
          `pre-flight: ${p.examples} examples, ${p.tokens} tokens (${p.trainableTokens} trained) per epoch, ` +
            `${p.truncatedExamples} truncated, ${p.totalSteps} steps` +
            (p.validationExamples > 0 ? `, ${p.validationExamples} validation examples` : '') +
            ` on ${backend}; memory estimate ${p.memoryEstimateMb.toLocaleString('en-US')} MiB of ${memoryLimitMb.toLocaleString('en-US')} MiB` +
            (p.gradientCheckpointing ? ' (gradient checkpointing)' : ''),
        );
      },
      onProgress: (p) => {
        if (values.quiet) return;
        if (tty) {
          process.stderr.write(`\r${progressLine(p)}\x1b[K${p.step === p.totalSteps ? '\n' : ''}`);
          return;
        }
        // Logs and pipes: a line at most every 2 s, and the last step.
        const now = performance.now();
        if (now - lastLine >= 2000 || p.step === p.totalSteps) {
          lastLine = now;
          io.err(progressLine(p));
        }
      },
      onEval: (e) => {
        if (values.quiet) return;
        const accuracy = e.dpo
          ? `reward margin ${e.dpo.rewardsMargin.toFixed(4)}, reward accuracy ${(e.dpo.rewardsAccuracy * 100).toFixed(1)}%`
          : `accuracy ${((e.meanTokenAccuracy ?? Number.NaN) * 100).toFixed(1)}%`;
        io.err(
          `${tty ? '\n' : ''}eval at step ${e.step}: loss ${e.loss.toFixed(4)}, ${accuracy}${e.isBest ? ' (best)' : ''}`,
        );
      },
    });
    await savePeftAdapter(outDir, result.adapter);
    const lineage = LineageSchema.parse({
      ...result.lineage,
      lorafleet_version: LORAFLEET_VERSION,
      base_model: basename(resolve(modelDir)),
      base_model_hash: (await hashBaseModel(modelDir)).sha256,
      // The backend as lorafleet names it (`wasm-blas`, not tfjs's `wasm`), as a job has it.
      backend,
      fine_tuning_job_id: null,
    });
    await writeFile(join(outDir, 'lorafleet.json'), `${JSON.stringify(lineage, null, 2)}\n`);
    await writeFile(join(outDir, 'training_metrics.csv'), result.metricsCsv);
    const seconds = (performance.now() - started) / 1000;
    if (values.json) {
      io.out(
        JSON.stringify({
          out: outDir,
          backend,
          steps: result.steps,
          total_steps: result.totalSteps,
          epochs: result.epochs,
          stop_reason: result.stopReason,
          resumed_from_step: result.resumedFromStep,
          final_train_loss: result.finalTrainLoss,
          validation: result.validation,
          best_step: result.bestStep,
          trained_tokens: result.trainedTokens,
          seconds,
          samples: result.samples,
        }),
      );
    } else {
      io.out(summaryText(result, outDir, backend, seconds));
    }
    return EXIT_OK;
  } catch (error) {
    if (error instanceof TrainingAbortedError) {
      io.err(
        `stopped after step ${error.step}` +
          (checkpointDir === undefined
            ? ' (no --checkpoint-dir, nothing saved)'
            : `; checkpoint in ${checkpointDir}, rerun with --resume to continue`),
      );
      return EXIT_INTERRUPTED;
    }
    // A wasm abort prints `Aborted()`, which tells a user nothing: say memory ran out, with
    // the pre-flight's estimate and what to change.
    if (isOutOfMemoryError(error)) {
      throw new Error(await outOfMemoryText(modelDir, spec, preflightSeen));
    }
    throw error;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/**
 * The flags' request resolved by libs/data `resolveFineTuneSpec`, as the API resolves a job:
 * "auto" sized by the examples the file holds, `max_seq_length` from the model's context.
 */
function resolveSpec(
  request: FineTuneSpecRequest,
  modelDir: string,
  trainJsonl: Uint8Array,
): FineTuneSpec {
  const facts = readModelFacts(modelDir);
  const text = new TextDecoder('utf-8').decode(trainJsonl);
  // "auto" sizes by examples, or by pairs for DPO; a file of the other kind fails here, with
  // the validator's line-numbered message.
  const examples =
    request.method?.type === 'dpo'
      ? parsePreferenceJsonl(text).length
      : parseJsonlExamples(text).length;
  try {
    return resolveFineTuneSpec(request, {
      model: basename(resolve(modelDir)),
      contextLength: facts.contextLength,
      trainingExamples: examples,
      baseLearningRate: facts.defaultLearningRate,
    });
  } catch (error) {
    if (error instanceof FineTuneSpecError) throw new UsageError(error.message);
    if (error instanceof ZodError) {
      const issue = error.issues[0];
      throw new UsageError(`${issue.path.join('.') || 'options'}: ${issue.message}`);
    }
    throw error;
  }
}

/** The out-of-memory message for this run, with lora-core's advice once the pre-flight ran. */
async function outOfMemoryText(
  modelDir: string,
  spec: FineTuneSpec,
  preflight: FineTunePreflight | null,
): Promise<string> {
  if (preflight === null) {
    return outOfMemoryMessage({ estimateMb: null, limitMb: null, advice: null });
  }
  let advice: string | null = null;
  try {
    const config = await readModelConfig(modelDir);
    advice = memoryAdvice({
      config,
      batchSize:
        Math.min(spec.hyperparameters.batch_size, Math.max(1, preflight.examples)) *
        (spec.method.type === 'dpo' ? 2 : 1),
      seqLength: Math.max(1, preflight.longestKeptTokens),
      lora: loraConfigOf(spec.lora, config),
      weightBytesPerParameter: 4,
      gradientCheckpointing: preflight.gradientCheckpointing,
    });
  } catch {
    advice = null;
  }
  return outOfMemoryMessage({
    estimateMb: preflight.memoryEstimateMb,
    limitMb: preflight.memoryLimitMb,
    advice,
  });
}
