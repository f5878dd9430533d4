#!/usr/bin/env node
// Checks that @huggingface/tokenizers (JS) loads our hand-built tokenizer.json and
// that it agrees with the Python encoder (tools/pretrain/bytelevel_bpe.py).
//
//   node tools/pretrain/check-tokenizer.mjs [modelDir] [casesJson]
//
// casesJson (default tools/pretrain/tokenizer_cases.json) is written by pretrain.py /
// make_tokenizer_cases.py: [{ "text": ..., "ids": [...] }, ...] with the Python ids.
import { readFileSync } from 'node:fs';
import { resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer } from '@huggingface/tokenizers';

const here = dirname(fileURLToPath(import.meta.url));
const modelDir = resolve(process.argv[2] ?? resolve(here, '../../models/lorafleet-tiny-llama'));
const casesPath = resolve(process.argv[3] ?? resolve(here, 'tokenizer_cases.json'));

const tokJson = JSON.parse(readFileSync(resolve(modelDir, 'tokenizer.json'), 'utf8'));
const tokCfg = JSON.parse(readFileSync(resolve(modelDir, 'tokenizer_config.json'), 'utf8'));
const tok = new Tokenizer(tokJson, tokCfg);
const cases = JSON.parse(readFileSync(casesPath, 'utf8'));

let failures = 0;
for (const { text, ids } of cases) {
  const enc = tok.encode(text, { add_special_tokens: false });
  const dec = tok.decode(enc.ids, { skip_special_tokens: false });
  const idsOk = JSON.stringify(enc.ids) === JSON.stringify(ids);
  const rtOk = dec === text;
  if (!idsOk || !rtOk) failures++;
  console.log(
    `${idsOk && rtOk ? 'ok  ' : 'FAIL'} ids=${idsOk ? 'match' : 'DIFFER'} roundtrip=${rtOk} n=${enc.ids.length} ${JSON.stringify(text.slice(0, 60))}`,
  );
  if (!idsOk) console.log(`     js=${JSON.stringify(enc.ids)}\n     py=${JSON.stringify(ids)}`);
  if (!rtOk) console.log(`     decoded=${JSON.stringify(dec)}`);
}
const vocabSize = tok.get_vocab(true).size;
console.log(`vocab_size(js)=${vocabSize} cases=${cases.length} failures=${failures}`);
process.exit(failures ? 1 : 0);
