#!/usr/bin/env node
// Writes models/tiny-random-gpt2: a GPT-2 with random (seeded) weights, ~40k parameters,
// and a small byte-level BPE tokenizer. It learns nothing useful; it exists so tests and the
// walking skeleton exercise the real load → LoRA → train → PEFT export path in seconds.
// Re-run after `npm run build`:  node tools/scripts/make-tiny-random-model.mjs [outDir]
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const data = require('../../libs/data/dist/index.js');
const core = require('../../libs/lora-core/dist/index.js');

const outDir = process.argv[2] ?? path.join(import.meta.dirname, '../../models/tiny-random-gpt2');
const corpus = [
  'Say hi: hi',
  'Say yes: yes',
  'Say no: no',
  'Say ok: ok',
  'The quick brown fox jumps over the lazy dog.',
  'Call me Ishmael.',
];
const merges = data.learnByteLevelBpeMerges(corpus, 40);
const EOS = '<|endoftext|>';
const tokenizerJson = data.buildByteLevelBpeTokenizerJson({ merges, specialTokens: [EOS] });
const vocabSize = Object.keys(tokenizerJson.model.vocab).length + tokenizerJson.added_tokens.length;
const eosId = tokenizerJson.added_tokens[0].id;
await data.writeTokenizerDir(outDir, {
  tokenizerJson,
  tokenizerConfig: data.buildTokenizerConfig({
    bosToken: EOS,
    eosToken: EOS,
    padToken: EOS,
    modelMaxLength: 64,
  }),
});
const config = {
  architectures: ['GPT2LMHeadModel'],
  model_type: 'gpt2',
  vocab_size: vocabSize,
  n_positions: 64,
  n_embd: 32,
  n_layer: 2,
  n_head: 2,
  n_inner: null,
  activation_function: 'gelu_new',
  layer_norm_epsilon: 1e-5,
  bos_token_id: eosId,
  eos_token_id: eosId,
  tie_word_embeddings: true,
  torch_dtype: 'float32',
};
await core.initBackend('cpu');
const model = core.createRandomCausalLM(core.parseModelConfig(config), 1234);
await core.saveHfModel(model, outDir);
console.log(`wrote ${outDir} (vocab ${vocabSize})`);
