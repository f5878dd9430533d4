/**
 * Issue 16: `lorafleet model inspect` and `lorafleet train` on each new family (Qwen2, Qwen3,
 * Mistral, Phi-3, Gemma 2), on tiny random models written locally with the shipped Llama
 * tokenizer. Parity with PyTorch is libs/lora-core's; this proves the CLI path: config
 * parsing, PEFT's default targets (lorafleet's `qkv_proj` for Phi-3), the sliding-window cap
 * on max_seq_length, and an adapter written under the family's module names.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { writeRandomModelDir } from '@lorafleet/lora-core';

import { main } from '../src/main';
import type { CliIo } from '../src/cli.io';

jest.setTimeout(120_000);

const TOKENIZER_FROM = join(__dirname, '..', '..', '..', 'models', 'lorafleet-tiny-llama');

/** Tiny shapes; the shipped tokenizer's ids need a vocabulary of 2048. */
const SMALL = {
  vocab_size: 2048,
  hidden_size: 32,
  intermediate_size: 48,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 256,
};

const FAMILIES: Array<[string, Record<string, unknown>, string[]]> = [
  ['qwen2', { tie_word_embeddings: true, use_sliding_window: false }, ['q_proj', 'v_proj']],
  ['qwen3', { head_dim: 12, tie_word_embeddings: false }, ['q_proj', 'v_proj']],
  ['mistral', { head_dim: 16, sliding_window: 48 }, ['q_proj', 'v_proj']],
  ['phi3', { sliding_window: null }, ['qkv_proj']],
  ['gemma2', { head_dim: 16, query_pre_attn_scalar: 16, sliding_window: 48 }, ['q_proj', 'v_proj']],
];

let scratch: string;
let trainFile: string;

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'lorafleet-families-'));
  trainFile = join(scratch, 'train.jsonl');
  const lines = Array.from({ length: 4 }, (_, i) =>
    JSON.stringify({ prompt: `Word ${i}:`, completion: ` ${'abcdef'.slice(0, 3 + i)} done.` }),
  );
  await writeFile(trainFile, `${lines.join('\n')}\n`);
});
afterAll(() => rm(scratch, { recursive: true, force: true }));

async function run(args: string[]): Promise<{ code: number; out: string }> {
  let out = '';
  const io: CliIo = { out: (t) => (out += `${t}\n`), err: (t) => (out += `${t}\n`) };
  return { code: await main(args, io), out };
}

it.each(FAMILIES)(
  '%s: model inspect and train on the default targets',
  async (family, extra, targets) => {
    const model = join(scratch, family);
    await writeRandomModelDir(
      model,
      { model_type: family, ...SMALL, ...extra },
      { seed: 1, tokenizerFrom: TOKENIZER_FROM },
    );

    const inspect = await run(['model', 'inspect', model, '--json']);
    expect(inspect.code).toBe(0);
    const summary = JSON.parse(inspect.out) as { target_modules?: string[] } & Record<
      string,
      unknown
    >;
    expect(JSON.stringify(summary)).toContain(family);

    const out = join(scratch, `${family}-adapter`);
    const trained = await run([
    'train', '--model', model, '--train', trainFile, '--out', out,
    '--batch-size', '2', '--max-steps', '2', '--r', '4', '--backend', 'cpu',
  ]); // prettier-ignore
    expect({ code: trained.code, out: trained.code === 0 ? '' : trained.out }).toEqual({
      code: 0,
      out: '',
    });
    const config = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8')) as {
      target_modules: string[];
    };
    expect([...config.target_modules].sort()).toEqual(targets);
    const lineage = JSON.parse(readFileSync(join(out, 'lorafleet.json'), 'utf8')) as Record<
      string,
      unknown
    >;
    // A sliding window caps the default max_seq_length (min(1024, context length)).
    const window = extra.sliding_window;
    expect(JSON.stringify(lineage)).toContain(
      `"max_seq_length":${typeof window === 'number' ? window : 256}`,
    );
  },
);
