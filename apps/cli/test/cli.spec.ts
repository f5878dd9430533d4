import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { buildByteLevelBpeTokenizerJson, toByteLevel, writeTokenizerDir } from '@lorafleet/data';
import {
  createRandomCausalLM,
  initBackend,
  REQUESTED_BACKENDS,
  parseModelConfig,
  readSafetensors,
  saveHfModel,
  writeSafetensors,
} from '@lorafleet/lora-core';

import { main } from '../src/main';
import type { CliIo } from '../src/cli.io';

const FIXTURES = join(__dirname, '..', '..', '..', 'libs', 'lora-core', 'test', 'fixtures');
const GPT2 = join(FIXTURES, 'gpt2-tiny');
const GPT2_ADAPTER = join(FIXTURES, 'gpt2-tiny-adapter');

async function run(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: CliIo = { out: (t) => (out += `${t}\n`), err: (t) => (err += `${t}\n`) };
  const code = await main(argv, io);
  return { code, out, err };
}

const expected = readSafetensors(
  readFileSync(join(FIXTURES, 'gpt2-tiny-expected.safetensors')),
).tensors;
const inputs = JSON.parse(readFileSync(join(FIXTURES, 'gpt2-tiny-inputs.json'), 'utf8')) as {
  input_ids: number[][];
};
const firstRow = inputs.input_ids[0];

function maxAbsDiffRow(rows: number[][], reference: Float32Array): number {
  const flat = rows.flat();
  return Math.max(...flat.map((v, i) => Math.abs(v - reference[i])));
}

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'lorafleet-cli-'));
});
afterAll(() => rm(scratch, { recursive: true }));

describe('lorafleet', () => {
  it('prints usage and exits 2 without a command, 0 with --help', async () => {
    expect((await run()).code).toBe(2);
    const help = await run('--help');
    expect(help.code).toBe(0);
    expect(help.out).toMatch(/model inspect/);
    expect((await run('frobnicate')).err).toMatch(/unknown command "frobnicate"/);
    expect((await run('model', 'explode')).code).toBe(2);
  });

  it.each([['model', 'inspect'], ['model', 'forward'], ['merge']])(
    '%s %s --help exits 0',
    async (...cmd) => {
      const result = await run(...cmd, '--help');
      expect(result.code).toBe(0);
      expect(result.out).toMatch(/^Usage: lorafleet/);
    },
  );
});

describe('lorafleet model inspect', () => {
  it('prints the PEFT line from config.json alone', async () => {
    const dir = join(scratch, 'config-only');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'config.json'), readFileSync(join(GPT2, 'config.json')));
    const result = await run(
      'model',
      'inspect',
      dir,
      '--r',
      '8',
      '--alpha',
      '16',
      '--target-modules',
      'c_attn',
    );
    expect(result.code).toBe(0);
    // c_attn: r·(32 + 96) per layer × 2 layers = 2,048; base 28,544.
    expect(result.out).toContain(
      'trainable params: 2,048 || all params: 30,592 || trainable%: 6.6946',
    );
  });

  it('prints JSON with --json', async () => {
    const result = await run(
      'model',
      'inspect',
      GPT2,
      '--target-modules',
      'all-linear',
      '--r',
      '2',
      '--json',
    );
    expect(result.code).toBe(0);
    const json = JSON.parse(result.out) as Record<string, unknown>;
    expect(json).toMatchObject({
      base_params: 28544,
      trainable_params: 2 * 2 * (128 + 64 + 160 + 160),
      all_params: 28544 + 2048,
    });
  });

  it.each([
    [['model', 'inspect'], /exactly one <model-dir>/],
    [['model', 'inspect', GPT2, '--r', 'x'], /--r must be a positive integer/],
    [['model', 'inspect', GPT2, '--alpha=-1'], /--alpha must be a positive number/],
    [['model', 'inspect', GPT2, '--target-modules', 'q_proj'], /match no linear layer/],
    [['model', 'inspect', GPT2, '--bogus'], /Unknown option '--bogus'/],
  ])('exits 2 on bad input %j', async (argv, message) => {
    const result = await run(...argv);
    expect(result.code).toBe(2);
    expect(result.err).toMatch(message);
  });

  it('exits 1 with a clear message when config.json is missing or unsupported', async () => {
    const missing = await run('model', 'inspect', join(scratch, 'nowhere'));
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/cannot read config.json/);
    const dir = join(scratch, 'bert');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'config.json'), '{"model_type":"bert"}');
    expect((await run('model', 'inspect', dir)).err).toMatch(/model_type "bert" is not supported/);
  });

  it('refuses a config with absurd sizes by name instead of running out of memory (issue 14, item 17)', async () => {
    const dir = join(scratch, 'ten-million-layers');
    await mkdir(dir, { recursive: true });
    // The ~300-byte config.json from the issue: inspect died of V8 OOM at 4.8 GB on it.
    const config = {
      architectures: ['GPT2LMHeadModel'],
      model_type: 'gpt2',
      n_layer: 10_000_000,
      n_embd: 768,
      n_head: 12,
      n_positions: 1024,
      vocab_size: 50257,
      activation_function: 'gelu_new',
      layer_norm_epsilon: 1e-5,
      torch_dtype: 'float32',
    };
    await writeFile(join(dir, 'config.json'), JSON.stringify(config));
    const started = Date.now();
    const result = await run('model', 'inspect', dir);
    expect(result.code).toBe(1);
    expect(result.err).toMatch(/"n_layer" must be an integer from 1 to 2048 \(got 10000000\)/);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('counts the largest accepted model arithmetically and prints grouped integers', async () => {
    const dir = join(scratch, 'largest-accepted');
    await mkdir(dir, { recursive: true });
    await writeFile(
      join(dir, 'config.json'),
      JSON.stringify({
        model_type: 'llama',
        num_hidden_layers: 2048,
        hidden_size: 65_536,
        intermediate_size: 1_048_576,
        num_attention_heads: 4096,
        head_dim: 1024,
        vocab_size: 4_194_304,
      }),
    );
    const started = Date.now();
    const text = await run('model', 'inspect', dir, '--target-modules', 'all-linear');
    expect(Date.now() - started).toBeLessThan(2000);
    expect(text.code).toBe(0);
    expect(text.out).toMatch(/^base params: \d{1,3}(,\d{3})+$/m);
    expect(text.out).toMatch(/\(14336 layers\)/);
    expect(text.out).not.toMatch(/e\+/);
    const json = await run('model', 'inspect', dir, '--json');
    const parsed = JSON.parse(json.out) as { base_params: number; all_params: number };
    expect(Number.isSafeInteger(parsed.all_params)).toBe(true);
  });
});

describe('lorafleet model forward', () => {
  it('prints [T, vocab] logits matching the PyTorch reference', async () => {
    const result = await run('model', 'forward', GPT2, '--ids', firstRow.join(','), '--json');
    expect(result.code).toBe(0);
    const { logits } = JSON.parse(result.out) as { logits: number[][] };
    expect(logits).toHaveLength(firstRow.length);
    expect(logits[0]).toHaveLength(64);
    expect(maxAbsDiffRow(logits, expected.get('logits_base')!.data)).toBeLessThanOrEqual(1e-4);
  });

  it('applies a PEFT adapter', async () => {
    const result = await run(
      'model',
      'forward',
      GPT2,
      '--ids',
      firstRow.join(','),
      '--adapter',
      GPT2_ADAPTER,
      '--json',
      '--backend',
      'wasm',
    );
    expect(result.code).toBe(0);
    const { logits } = JSON.parse(result.out) as { logits: number[][] };
    expect(maxAbsDiffRow(logits, expected.get('logits_lora')!.data)).toBeLessThanOrEqual(1e-4);
  });

  it("tokenizes --text with the model directory's tokenizer.json", async () => {
    const dir = join(scratch, 'with-tokenizer');
    await initBackend('cpu');
    const config = parseModelConfig({
      model_type: 'gpt2',
      vocab_size: 257,
      n_embd: 8,
      n_head: 2,
      n_layer: 1,
      n_positions: 16,
    });
    const model = createRandomCausalLM(config, 3);
    await saveHfModel(model, dir);
    model.dispose();
    await writeTokenizerDir(dir, {
      tokenizerJson: buildByteLevelBpeTokenizerJson({ specialTokens: ['<|endoftext|>'] }),
    });
    const fromText = await run('model', 'forward', dir, '--text', 'Hi!', '--json');
    expect(fromText.code).toBe(0);
    const parsed = JSON.parse(fromText.out) as { ids: number[]; logits: number[][] };
    // A pure byte vocabulary: ids are the bytes in GPT-2's byte order.
    expect(parsed.ids).toHaveLength(toByteLevel('Hi!').length);
    const fromIds = await run('model', 'forward', dir, '--ids', parsed.ids.join(','), '--json');
    expect((JSON.parse(fromIds.out) as { logits: number[][] }).logits).toEqual(parsed.logits);
    expect((await run('model', 'forward', dir, '--text', 'x', '--ids', '1')).code).toBe(2);
    expect((await run('model', 'forward', GPT2, '--text', 'x')).err).toMatch(/tokenizer\.json/);
  });

  it.each([
    [['--ids', '1,x'], /non-negative integers/],
    [['--ids', '1,64'], /outside the vocabulary/],
    [[], /--ids is required/],
    [['--ids', '1', '--backend', 'tpu'], /--backend must be one of/],
  ])('exits 2 on bad input %j', async (extra, message) => {
    const result = await run('model', 'forward', GPT2, ...extra);
    expect(result.code).toBe(2);
    expect(result.err).toMatch(message);
  });
});

describe('lorafleet merge', () => {
  /** `lorafleet merge` of an adapter into the tiny GPT-2, written to `out`. */
  const merge = (out: string, adapter = GPT2_ADAPTER, ...extra: string[]) =>
    run('merge', '--model', GPT2, '--adapter', adapter, '--out', out, ...extra);

  it('writes a merged Hugging Face directory equal to base + adapter', async () => {
    const out = join(scratch, 'merged');
    const merged = await merge(out);
    expect(merged.code).toBe(0);
    const result = await run('model', 'forward', out, '--ids', firstRow.join(','), '--json');
    const { logits } = JSON.parse(result.out) as { logits: number[][] };
    expect(maxAbsDiffRow(logits, expected.get('logits_lora')!.data)).toBeLessThanOrEqual(1e-4);
    // Refuses to overwrite without --force.
    const again = await merge(out);
    expect(again.code).toBe(2);
    expect(again.err).toMatch(/not empty/);
  });

  it('runs on webgpu (LORAFLEET_BACKEND) and writes the weights a --backend cpu merge writes', async () => {
    const saved = process.env.LORAFLEET_BACKEND;
    // Both defaults at once: the environment picks webgpu, and --backend overrides it.
    process.env.LORAFLEET_BACKEND = 'webgpu';
    let cpu: Awaited<ReturnType<typeof run>>;
    let gpu: Awaited<ReturnType<typeof run>>;
    try {
      cpu = await merge(join(scratch, 'merged-cpu'), GPT2_ADAPTER, '--backend', 'cpu');
      gpu = await merge(join(scratch, 'merged-webgpu'));
    } finally {
      if (saved === undefined) delete process.env.LORAFLEET_BACKEND;
      else process.env.LORAFLEET_BACKEND = saved;
    }
    expect(cpu.code).toBe(0);
    expect(cpu.out).toMatch(/ on cpu$/m);
    expect(gpu.code).toBe(0);
    expect(gpu.out).toMatch(/ on webgpu$/m);

    const weights = (dir: string) =>
      readSafetensors(readFileSync(join(scratch, dir, 'model.safetensors'))).tensors;
    const [onCpu, onGpu] = [weights('merged-cpu'), weights('merged-webgpu')];
    expect([...onGpu.keys()]).toEqual([...onCpu.keys()]);
    let worst = 0;
    for (const [key, ref] of onCpu) {
      const got = onGpu.get(key)!.data;
      for (let i = 0; i < ref.data.length; i++) {
        worst = Math.max(worst, Math.abs(got[i] - ref.data[i]));
      }
    }
    // The webgpu parity bound for merged weights (libs/lora-core/test/webgpu-backend.spec.ts).
    expect(worst).toBeLessThanOrEqual(1e-5);
  });

  it('exits 2 naming every backend on an unknown --backend', async () => {
    const result = await merge(
      join(scratch, 'never-written'),
      GPT2_ADAPTER,
      '--backend',
      'nonsense',
    );
    expect(result.code).toBe(2);
    expect(result.err).toContain(
      `--backend must be one of ${REQUESTED_BACKENDS.join(', ')} (got "nonsense")`,
    );
  });

  it('exits 2 when a required flag is missing', async () => {
    const result = await run('merge', '--model', GPT2, '--out', join(scratch, 'x'));
    expect(result.code).toBe(2);
    expect(result.err).toMatch(/--adapter is required/);
  });

  it('refuses an adapter whose lineage names other base weights unless overridden', async () => {
    const adapter = join(scratch, 'adapter-with-lineage');
    await mkdir(adapter, { recursive: true });
    for (const f of ['adapter_config.json', 'adapter_model.safetensors']) {
      await writeFile(join(adapter, f), readFileSync(join(GPT2_ADAPTER, f)));
    }
    await writeFile(
      join(adapter, 'lorafleet.json'),
      JSON.stringify({ base_model_sha256: '0'.repeat(64) }),
    );
    const refused = await merge(join(scratch, 'm2'), adapter);
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/--allow-base-mismatch/);
    const allowed = await merge(join(scratch, 'm3'), adapter, '--allow-base-mismatch');
    expect(allowed.code).toBe(0);
    expect(allowed.err).toMatch(/warning/);
  });

  it('names an unsupported PEFT feature', async () => {
    const adapter = join(scratch, 'dora');
    await mkdir(adapter, { recursive: true });
    const cfg = JSON.parse(
      readFileSync(join(GPT2_ADAPTER, 'adapter_config.json'), 'utf8'),
    ) as object;
    await writeFile(
      join(adapter, 'adapter_config.json'),
      JSON.stringify({ ...cfg, use_dora: true }),
    );
    await writeFile(
      join(adapter, 'adapter_model.safetensors'),
      readFileSync(join(GPT2_ADAPTER, 'adapter_model.safetensors')),
    );
    const result = await merge(join(scratch, 'm4'), adapter);
    expect(result.code).toBe(1);
    expect(result.err).toMatch(/"use_dora" is set/);
  });
});

describe('non-finite adapters and weights (issue 14, item 18)', () => {
  /** A copy of the fixture adapter with `patch` applied to its config and one weight set to `value`. */
  async function craftedAdapter(
    name: string,
    patch: Record<string, unknown>,
    value?: number,
  ): Promise<string> {
    const dir = join(scratch, name);
    await mkdir(dir, { recursive: true });
    const cfg = JSON.parse(
      readFileSync(join(GPT2_ADAPTER, 'adapter_config.json'), 'utf8'),
    ) as Record<string, unknown>;
    await writeFile(join(dir, 'adapter_config.json'), JSON.stringify({ ...cfg, ...patch }));
    const tensors = Object.fromEntries(
      readSafetensors(readFileSync(join(GPT2_ADAPTER, 'adapter_model.safetensors'))).tensors,
    );
    if (value !== undefined) {
      const data = new Float32Array(tensors[NAN_KEY].data);
      data[3] = value;
      tensors[NAN_KEY] = { ...tensors[NAN_KEY], data };
    }
    await writeFile(join(dir, 'adapter_model.safetensors'), writeSafetensors(tensors));
    return dir;
  }
  const NAN_KEY = 'base_model.model.transformer.h.0.attn.c_attn.lora_B.weight';

  it.each([
    [
      'a NaN weight',
      {},
      NaN,
      new RegExp(`tensor "${NAN_KEY.replace(/\./g, '\\.')}" holds a non-finite value`),
    ],
    ['an infinite weight', {}, Infinity, /holds a non-finite value \(Infinity at flat index 3\)/],
    [
      'lora_alpha 1e308',
      { lora_alpha: 1e308 },
      undefined,
      /"lora_alpha" 1e\+308 gives a LoRA scaling/,
    ],
  ])(
    'model forward --adapter and merge exit 1 on %s, naming it',
    async (label, patch, value, message) => {
      const adapter = await craftedAdapter(
        `bad-adapter-${label.replace(/\W+/g, '-')}`,
        patch,
        value,
      );
      const forward = await run(
        'model',
        'forward',
        GPT2,
        '--ids',
        firstRow.join(','),
        '--adapter',
        adapter,
        '--json',
      );
      expect(forward.code).toBe(1);
      expect(forward.err).toMatch(message);
      expect(forward.out).toBe('');
      const out = join(scratch, `merged-${label.replace(/\W+/g, '-')}`);
      const merged = await run('merge', '--model', GPT2, '--adapter', adapter, '--out', out);
      expect(merged.code).toBe(1);
      expect(merged.err).toMatch(message);
      expect(existsSync(join(out, 'model.safetensors'))).toBe(false);
    },
  );

  it('model forward exits 1 on a base model with a NaN weight, naming the tensor', async () => {
    const dir = join(scratch, 'nan-base');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'config.json'), readFileSync(join(GPT2, 'config.json')));
    const tensors = Object.fromEntries(
      readSafetensors(readFileSync(join(GPT2, 'model.safetensors'))).tensors,
    );
    const data = new Float32Array(tensors['h.0.ln_1.weight'].data);
    data[0] = NaN;
    tensors['h.0.ln_1.weight'] = { ...tensors['h.0.ln_1.weight'], data };
    await writeFile(join(dir, 'model.safetensors'), writeSafetensors(tensors));
    const result = await run('model', 'forward', dir, '--ids', firstRow.join(','), '--json');
    expect(result.code).toBe(1);
    expect(result.err).toMatch(
      /tensor "h\.0\.ln_1\.weight" holds a non-finite value \(NaN at flat index 0\)/,
    );
    const merged = await run(
      'merge',
      '--model',
      dir,
      '--adapter',
      GPT2_ADAPTER,
      '--out',
      join(scratch, 'merged-nan-base'),
    );
    expect(merged.code).toBe(1);
    expect(merged.err).toMatch(/h\.0\.ln_1\.weight/);
  });
});
