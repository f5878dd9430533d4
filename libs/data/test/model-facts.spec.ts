import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DEFAULT_BASE_LEARNING_RATE } from '@lorafleet/contracts';
import {
  MODEL_CONFIG_INT_BOUNDS,
  MODEL_REGISTRY_ENTRY_FILE,
  ModelFactsError,
  configIntBounds,
  defaultMaxSeqLength,
  modelFactsFromConfig,
  readModelFacts,
  resolveFineTuneSpec,
  unknownTargetModules,
} from '../src';

const MODELS = path.resolve(__dirname, '../../../models');

describe('model facts from config.json (issue 14, items 8 and 9)', () => {
  it('reads context length and module names for every architecture', () => {
    expect(readModelFacts(path.join(MODELS, 'tiny-random-gpt2'))).toMatchObject({
      modelType: 'gpt2',
      contextLength: 64,
      numLayers: 2,
      moduleNames: ['c_attn', 'c_proj', 'c_fc'],
    });
    expect(readModelFacts(path.join(MODELS, 'lorafleet-tiny-llama'))).toMatchObject({
      modelType: 'llama',
      contextLength: 512,
      moduleNames: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    });
    // An untied head is a linear module too.
    expect(
      modelFactsFromConfig({ model_type: 'llama', tie_word_embeddings: false }).moduleNames,
    ).toContain('lm_head');
  });

  it('defaults max_seq_length to min(1024, context length)', () => {
    expect(defaultMaxSeqLength(64)).toBe(64);
    expect(defaultMaxSeqLength(1024)).toBe(1024);
    expect(defaultMaxSeqLength(131_072)).toBe(1024);
  });

  it("matches target modules by PEFT's rule without building per-layer paths", () => {
    const facts = modelFactsFromConfig({ model_type: 'gpt2', n_layer: 2048 });
    expect(
      unknownTargetModules(facts, [
        'c_attn',
        'mlp.c_proj',
        'h.2047.attn.c_attn',
        'transformer.h.0.mlp.c_fc',
        '3.attn.c_proj',
      ]),
    ).toEqual([]);
    expect(
      unknownTargetModules(facts, [
        'nope',
        'h.2048.attn.c_attn',
        'x.h.0.attn.c_attn',
        'lm_head',
        'attn',
      ]),
    ).toEqual(['nope', 'h.2048.attn.c_attn', 'x.h.0.attn.c_attn', 'lm_head', 'attn']);
  });

  it("takes the default learning rate from the model's registry entry, else 2e-4 (DESIGN §4)", () => {
    expect(readModelFacts(path.join(MODELS, 'tiny-random-gpt2')).defaultLearningRate).toBe(
      DEFAULT_BASE_LEARNING_RATE,
    );
    const dir = mkdtempSync(path.join(tmpdir(), 'lorafleet-model-entry-'));
    try {
      copyFileSync(
        path.join(MODELS, 'tiny-random-gpt2', 'config.json'),
        path.join(dir, 'config.json'),
      );
      const entry = path.join(dir, MODEL_REGISTRY_ENTRY_FILE);
      writeFileSync(entry, JSON.stringify({ default_learning_rate: 5e-5 }));
      const facts = readModelFacts(dir);
      expect(facts.defaultLearningRate).toBe(5e-5);
      // The resolver turns the multiplier into the model's rate, for the API and the CLI alike.
      const spec = resolveFineTuneSpec(
        { seed: 1, hyperparameters: { learning_rate_multiplier: 2 } },
        {
          model: 'entry',
          contextLength: facts.contextLength,
          trainingExamples: 10,
          baseLearningRate: facts.defaultLearningRate,
        },
      );
      expect(spec.training.learning_rate).toBe(1e-4);
      // A bad entry is refused by name, without the server's path.
      writeFileSync(entry, JSON.stringify({ default_learning_rate: -1 }));
      expect(() => readModelFacts(dir)).toThrow(/^lorafleet-model\.json: default_learning_rate: /);
      writeFileSync(entry, JSON.stringify({ learning_rate: 1e-4 }));
      expect(() => readModelFacts(dir)).toThrow(ModelFactsError);
      writeFileSync(entry, '{not json');
      expect(() => readModelFacts(dir)).toThrow('lorafleet-model.json is not valid JSON');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses architectures lorafleet cannot train, and bad context lengths, without paths', () => {
    expect(() => modelFactsFromConfig({ model_type: 'bert' })).toThrow(ModelFactsError);
    expect(() => modelFactsFromConfig({ model_type: 'gpt2', n_positions: -1 })).toThrow(
      /n_positions/,
    );
    expect(() => readModelFacts('/nonexistent/dir')).toThrow('config.json is missing');
  });

  it('holds every declared size to the range lora-core enforces, naming the field (item 17)', () => {
    expect(() => modelFactsFromConfig({ model_type: 'gpt2', n_layer: 10_000_000 })).toThrow(
      'config.json: "n_layer" must be an integer from 1 to 2048 (got 10000000)',
    );
    // Sizes the facts do not use are checked too: the worker would refuse the model for them.
    expect(() => modelFactsFromConfig({ model_type: 'llama', hidden_size: 1e9 })).toThrow(
      /"hidden_size" must be an integer from 1 to 65536/,
    );
    expect(() => modelFactsFromConfig({ model_type: 'gpt2', vocab_size: 2.5 })).toThrow(
      /"vocab_size"/,
    );
    // n_inner and head_dim may be null (transformers' "derive it").
    expect(
      modelFactsFromConfig({ model_type: 'gpt2', n_inner: null, n_layer: 2048 }).numLayers,
    ).toBe(2048);
    expect(configIntBounds('n_layer')).toEqual(MODEL_CONFIG_INT_BOUNDS.n_layer);
  });
});

describe('model facts of the rotary families (issue 16)', () => {
  it('accepts Qwen2, Qwen3, Mistral, Phi-3 and Gemma 2 with their module names', () => {
    expect(modelFactsFromConfig({ model_type: 'qwen2', tie_word_embeddings: true })).toMatchObject({
      modelType: 'qwen2',
      contextLength: 32768,
      moduleNames: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    });
    expect(modelFactsFromConfig({ model_type: 'qwen3' }).moduleNames).toContain('lm_head');
    const phi3 = modelFactsFromConfig({ model_type: 'phi3', sliding_window: null });
    expect(phi3).toMatchObject({
      modelType: 'phi3',
      contextLength: 4096,
      moduleNames: ['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj', 'lm_head'],
    });
    expect(unknownTargetModules(phi3, ['qkv_proj', 'q_proj'])).toEqual(['q_proj']);
  });

  it('caps the context length at an active sliding window (lora-core refuses beyond it)', () => {
    expect(
      modelFactsFromConfig({
        model_type: 'mistral',
        max_position_embeddings: 32768,
        sliding_window: 4096,
      }).contextLength,
    ).toBe(4096);
    expect(
      modelFactsFromConfig({ model_type: 'mistral', sliding_window: null }).contextLength,
    ).toBe(131072);
    // Qwen's sliding_window applies only with use_sliding_window: true.
    const qwen = { model_type: 'qwen2', max_position_embeddings: 32768, sliding_window: 1024 };
    expect(modelFactsFromConfig(qwen).contextLength).toBe(32768);
    expect(modelFactsFromConfig({ ...qwen, use_sliding_window: true }).contextLength).toBe(1024);
    // Gemma 2: tied head, window 4096 by default.
    expect(modelFactsFromConfig({ model_type: 'gemma2' })).toMatchObject({
      modelType: 'gemma2',
      contextLength: 4096,
      moduleNames: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    });
    expect(() => modelFactsFromConfig({ model_type: 'gemma3' })).toThrow(
      /supported: gpt2, llama, mistral, qwen2, qwen3, phi3, gemma2/,
    );
  });
});
