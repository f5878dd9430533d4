import path from 'node:path';
import {
  ModelFactsError,
  defaultMaxSeqLength,
  modelFactsFromConfig,
  readModelFacts,
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
    const facts = modelFactsFromConfig({ model_type: 'gpt2', n_layer: 10_000_000 });
    expect(
      unknownTargetModules(facts, [
        'c_attn',
        'mlp.c_proj',
        'h.9999999.attn.c_attn',
        'transformer.h.0.mlp.c_fc',
        '3.attn.c_proj',
      ]),
    ).toEqual([]);
    expect(
      unknownTargetModules(facts, [
        'nope',
        'h.10000000.attn.c_attn',
        'x.h.0.attn.c_attn',
        'lm_head',
        'attn',
      ]),
    ).toEqual(['nope', 'h.10000000.attn.c_attn', 'x.h.0.attn.c_attn', 'lm_head', 'attn']);
  });

  it('refuses architectures lorafleet cannot train, and bad context lengths, without paths', () => {
    expect(() => modelFactsFromConfig({ model_type: 'bert' })).toThrow(ModelFactsError);
    expect(() => modelFactsFromConfig({ model_type: 'gpt2', n_positions: -1 })).toThrow(
      /n_positions/,
    );
    expect(() => readModelFacts('/nonexistent/dir')).toThrow('config.json is missing');
  });
});
