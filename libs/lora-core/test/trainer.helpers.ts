/** Shared tiny datasets and models for the trainer, checkpoint and generation specs. */
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';

import {
  DEFAULT_BASE_LEARNING_RATE,
  FineTuneSpecSchema,
  type FineTuneSpec,
  type LoraConfigInput,
} from '@lorafleet/contracts';
import { loadTokenizer, tokenizeExample, type TextTokenizer } from '@lorafleet/data';

import {
  SeededRandom,
  Trainer,
  buildCausalLM,
  createRandomCausalLM,
  deriveSeed,
  parseModelConfig,
  type CausalLM,
  type TokenizedSequence,
  type WeightSource,
} from '../src';

export interface TestSpecOverrides {
  seed?: number;
  hyperparameters?: Partial<FineTuneSpec['hyperparameters']>;
  lora?: LoraConfigInput;
  training?: Partial<FineTuneSpec['training']>;
}

/**
 * A resolved spec for the tiny test models: the contracts schemas' defaults with 3 epochs of
 * batches of 4, seed 42, the base learning rate and max_seq_length 64 (their n_positions),
 * then `overrides` section by section.
 */
export function testSpec(overrides: TestSpecOverrides = {}): FineTuneSpec {
  return FineTuneSpecSchema.parse({
    seed: overrides.seed ?? 42,
    hyperparameters: {
      n_epochs: 3,
      batch_size: 4,
      learning_rate_multiplier: 1,
      ...overrides.hyperparameters,
    },
    lora: overrides.lora ?? {},
    training: {
      learning_rate: DEFAULT_BASE_LEARNING_RATE,
      max_seq_length: 64,
      ...overrides.training,
    },
  });
}

export const TINY_GPT2_DIR = join(__dirname, '../../../models/tiny-random-gpt2');

/** Eight prompt/completion pairs, short enough for n_positions 64. */
export const PAIRS: Array<{ prompt: string; completion: string }> = [
  { prompt: 'Say hi:', completion: ' hi' },
  { prompt: 'Say yes:', completion: ' yes' },
  { prompt: 'Say no:', completion: ' no' },
  { prompt: 'Say ok:', completion: ' ok' },
  { prompt: 'Color of the sky:', completion: ' blue' },
  { prompt: 'Call me:', completion: ' Ishmael' },
  { prompt: 'The quick brown:', completion: ' fox' },
  { prompt: 'Over the lazy:', completion: ' dog' },
];

export function pairsJsonl(pairs = PAIRS): string {
  return `${pairs.map((p) => JSON.stringify(p)).join('\n')}\n`;
}

let tokenizerPromise: Promise<TextTokenizer> | null = null;
export function tinyTokenizer(): Promise<TextTokenizer> {
  tokenizerPromise ??= loadTokenizer(TINY_GPT2_DIR);
  return tokenizerPromise;
}

export async function tokenizedPairs(pairs = PAIRS): Promise<TokenizedSequence[]> {
  const tokenizer = await tinyTokenizer();
  return pairs.map((p) =>
    tokenizeExample({ format: 'prompt_completion', ...p }, tokenizer, { maxSeqLength: 64 }),
  );
}

/**
 * A GPT-2 shaped like models/tiny-random-gpt2 (vocab 269), seeded, built in memory. Weights
 * are N(0, 0.3²) rather than transformers' 0.02: with 0.02 a 32-wide tied head cannot move
 * logits by more than about ±0.6, so no adapter could fit any data.
 */
export function tinyGpt2(seed = 7, overrides: Record<string, unknown> = {}): CausalLM {
  const source: WeightSource = {
    read(key, shape, init) {
      const count = shape.reduce((a, b) => a * b, 1);
      if (init === 'zeros') return new Float32Array(count);
      if (init === 'ones') return new Float32Array(count).fill(1);
      return new SeededRandom(deriveSeed(seed, key)).normal(count, 0.3);
    },
  };
  return buildCausalLM(
    parseModelConfig({
      model_type: 'gpt2',
      vocab_size: 269,
      n_positions: 64,
      n_embd: 32,
      n_layer: 2,
      n_head: 2,
      ...overrides,
    }),
    source,
  );
}

/** A small Llama with GQA and an untied head. */
export function tinyLlama(seed = 7): CausalLM {
  return createRandomCausalLM(
    parseModelConfig({
      model_type: 'llama',
      vocab_size: 269,
      hidden_size: 32,
      intermediate_size: 48,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      num_hidden_layers: 2,
      max_position_embeddings: 64,
      tie_word_embeddings: false,
    }),
    seed,
  );
}

/** A Trainer over PAIRS for `model` with a new r=4 adapter on c_attn (A seeded by `adapterSeed`). */
export async function cAttnTrainer(
  model: CausalLM,
  adapterSeed: number,
  overrides: TestSpecOverrides,
): Promise<Trainer> {
  model.addAdapter(
    'default',
    { r: 4, alpha: 8, dropout: 0, targetModules: ['c_attn'], useRslora: false },
    adapterSeed,
  );
  return new Trainer({
    model,
    train: await tokenizedPairs(),
    padTokenId: 268,
    spec: testSpec(overrides),
  });
}

export function adapterBytes(model: CausalLM, name = 'default'): Buffer {
  const chunks: Buffer[] = [];
  for (const [path, w] of model.adapterWeights(name)) {
    chunks.push(Buffer.from(path), Buffer.from(w.a.buffer), Buffer.from(w.b.buffer));
  }
  return Buffer.concat(chunks);
}

/** Gives every lora_B a seeded random value, so that A receives gradients too (B = 0 at init). */
export function randomizeLoraB(model: CausalLM, seed = 1, std = 0.1): void {
  for (const [name, variable] of model.namedTrainableVariables()) {
    if (!name.endsWith('.lora_B')) continue;
    const values = new SeededRandom(deriveSeed(seed, name)).normal(variable.size, std);
    tf.tidy(() => variable.assign(tf.tensor(values, variable.shape)));
  }
}
