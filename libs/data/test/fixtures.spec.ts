import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stableJson, writeTokenizerDir } from '../src';
import {
  TINY_CHATML_DIR,
  TINY_PLAIN_DIR,
  buildTinyChatmlConfig,
  buildTinyTokenizerJson,
} from './fixtures/tiny-tokenizers';

// The committed fixtures are what lora-core's tiny models and other projects' tests load, so
// they must match the recipe byte for byte; UPDATE_FIXTURES=1 regenerates them.
describe('committed tokenizer fixtures', () => {
  const expected: {
    name: string;
    dir: string;
    tokenizerJson: object;
    tokenizerConfig?: object;
  }[] = [
    { name: 'tiny-plain', dir: TINY_PLAIN_DIR, tokenizerJson: buildTinyTokenizerJson() },
    {
      name: 'tiny-chatml',
      dir: TINY_CHATML_DIR,
      tokenizerJson: buildTinyTokenizerJson(),
      tokenizerConfig: buildTinyChatmlConfig(),
    },
  ];

  if (process.env.UPDATE_FIXTURES === '1') {
    beforeAll(async () => {
      for (const { dir, tokenizerJson, tokenizerConfig } of expected) {
        await writeTokenizerDir(dir, { tokenizerJson, tokenizerConfig });
      }
    });
  }

  it.each(expected)('$name matches its recipe', async ({ dir, tokenizerJson, tokenizerConfig }) => {
    await expect(readFile(join(dir, 'tokenizer.json'), 'utf8')).resolves.toBe(
      stableJson(tokenizerJson),
    );
    if (tokenizerConfig !== undefined) {
      await expect(readFile(join(dir, 'tokenizer_config.json'), 'utf8')).resolves.toBe(
        stableJson(tokenizerConfig),
      );
    }
  });

  it('builds the same tokenizer twice (the recipe is deterministic)', () => {
    expect(stableJson(buildTinyTokenizerJson())).toBe(stableJson(buildTinyTokenizerJson()));
  });
});
