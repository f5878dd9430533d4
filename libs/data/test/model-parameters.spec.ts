import { readFileSync } from 'node:fs';
import path from 'node:path';
import {
  countBaseParameters,
  countLoraTargets,
  defaultTargetModules,
  linearModuleSpecs,
  modelFactsFromConfig,
  readModelFacts,
} from '../src';

const ROOT = path.resolve(__dirname, '../../..');
const LORA_CORE_FIXTURES = path.join(ROOT, 'libs/lora-core/test/fixtures');

/** The sizes of Qwen/Qwen2.5-0.5B's published config.json (the rest does not change a count). */
const QWEN25_05B = {
  model_type: 'qwen2',
  hidden_size: 896,
  intermediate_size: 4864,
  max_position_embeddings: 32768,
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  sliding_window: 32768,
  tie_word_embeddings: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

/** microsoft/Phi-3-mini-4k-instruct's published sizes. */
const PHI3_MINI = {
  model_type: 'phi3',
  attention_bias: false,
  hidden_size: 3072,
  intermediate_size: 8192,
  max_position_embeddings: 4096,
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 32,
  sliding_window: 2047,
  tie_word_embeddings: false,
  vocab_size: 32064,
};

/** Total elements of the tensors a safetensors file holds (its header alone). */
function storedParameters(dir: string): number {
  const bytes = readFileSync(path.join(dir, 'model.safetensors'));
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')) as Record<
    string,
    { shape?: number[] }
  >;
  let total = 0;
  for (const [name, info] of Object.entries(header)) {
    if (name !== '__metadata__') total += (info.shape ?? []).reduce((a, b) => a * b, 1);
  }
  return total;
}

describe('parameter counts from config.json alone, without tfjs (issue 16, item 8)', () => {
  it('counts Qwen2.5-0.5B as PEFT does: base, and with r=8 on the default targets', () => {
    const facts = modelFactsFromConfig(QWEN25_05B);
    expect(facts).toMatchObject({
      modelType: 'qwen2',
      parameters: 494_032_768,
      contextLength: 32768,
    });
    const targets = defaultTargetModules('qwen2');
    expect(targets).toEqual(['q_proj', 'v_proj']);
    // PEFT: `trainable params: 540,672 || all params: 494,573,440`.
    const adapter = countLoraTargets(
      {
        modelType: 'qwen2',
        vocabSize: 151936,
        hiddenSize: 896,
        numLayers: 24,
        numHeads: 14,
        numKeyValueHeads: 2,
        headDim: 64,
        intermediateSize: 4864,
        tieWordEmbeddings: true,
        qkvBias: true,
        oProjBias: false,
        mlpBias: false,
        qkNorm: false,
        fusedProjections: false,
        sandwichNorms: false,
      },
      { r: 8, targetModules: targets },
    );
    expect(adapter).toEqual({ modules: 48, parameters: 540_672 });
    expect(facts.parameters + adapter.parameters).toBe(494_573_440);
  });

  it('counts Phi-3-mini (fused projections, untied head) and caps its context at the window', () => {
    expect(modelFactsFromConfig(PHI3_MINI)).toMatchObject({
      modelType: 'phi3',
      parameters: 3_821_079_552,
      contextLength: 2047,
    });
  });

  it.each([
    'models/tiny-random-gpt2',
    'models/lorafleet-tiny-llama',
    ...['gpt2', 'llama', 'qwen2', 'qwen3', 'mistral', 'phi3', 'gemma2'].map((family) =>
      path.relative(ROOT, path.join(LORA_CORE_FIXTURES, `${family}-tiny`)),
    ),
  ])('%s: the count equals the tensors its safetensors file stores', (dir) => {
    // The fixtures are written by the PyTorch reference (tools/reference), an independent count.
    expect(readModelFacts(path.join(ROOT, dir)).parameters).toBe(
      storedParameters(path.join(ROOT, dir)),
    );
  });

  it('sizes every layer from the templates, so a count never lists layers', () => {
    const shape = {
      modelType: 'gpt2',
      vocabSize: 10,
      hiddenSize: 4,
      numLayers: 2,
      maxPositions: 8,
      innerSize: 16,
      tieWordEmbeddings: true,
    } as const;
    expect(linearModuleSpecs(shape).map((s) => s.path)).toEqual([
      'transformer.h.0.attn.c_attn',
      'transformer.h.0.attn.c_proj',
      'transformer.h.0.mlp.c_fc',
      'transformer.h.0.mlp.c_proj',
      'transformer.h.1.attn.c_attn',
      'transformer.h.1.attn.c_proj',
      'transformer.h.1.mlp.c_fc',
      'transformer.h.1.mlp.c_proj',
    ]);
    // A 2048-layer config is counted by arithmetic, not by listing its modules.
    expect(countBaseParameters({ ...shape, numLayers: 2048 })).toBeGreaterThan(0);
  });
});
