/**
 * Issue 16: one fine-tuning job end to end on a tiny Qwen2 (q/k/v biases, tied head) through
 * the api and a worker: created against PEFT's default targets for qwen2, trained, and its
 * adapter downloaded in PEFT layout under Qwen2's module paths. The families' maths is
 * checked against PyTorch in libs/lora-core; this checks that nothing on the way (model facts
 * at create, the worker's loader, PEFT export) is still Llama-only.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { readSafetensors, writeRandomModelDir } from '@lorafleet/lora-core';
import { REPO_ROOT } from '@lorafleet/testing';

import { Fleet } from './fleet-harness';

jest.setTimeout(180_000);

describe('a Qwen2 job through the api and a worker', () => {
  let models: string;
  let fleet: Fleet;

  beforeAll(async () => {
    models = mkdtempSync(path.join(tmpdir(), 'lf-models-qwen2-'));
    await writeRandomModelDir(
      path.join(models, 'tiny-qwen2'),
      {
        model_type: 'qwen2',
        architectures: ['Qwen2ForCausalLM'],
        vocab_size: 2048, // the shipped Llama tokenizer's ids
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        max_position_embeddings: 128,
        rope_theta: 1000000.0,
        tie_word_embeddings: true,
        use_sliding_window: false,
      },
      { seed: 3, tokenizerFrom: path.join(REPO_ROOT, 'models/lorafleet-tiny-llama') },
    );
    fleet = new Fleet({ modelsDir: models });
    await fleet.start();
  });

  afterAll(async () => {
    await fleet.stop();
    rmSync(models, { recursive: true, force: true });
  });

  it("trains on q_proj and v_proj and returns a PEFT adapter under Qwen2's module paths", async () => {
    const fileId = await fleet.uploadExamples(8);
    const created = await fleet.request('POST', '/v1/fine_tuning/jobs', {
      model: 'tiny-qwen2',
      training_file: fileId,
      seed: 5,
      hyperparameters: { n_epochs: 1, batch_size: 2 },
      lora: { r: 4, alpha: 8 },
      training: { max_seq_length: 64, max_steps: 2 },
    });
    expect(created.status).toBe(201);
    const id = (created.body as { id: string }).id;

    fleet.startWorker('w-qwen2');
    const job = await fleet.waitForTerminal(id);
    expect({ status: job.status, error: job.error }).toEqual({ status: 'succeeded', error: null });

    const adapterId = (job as unknown as { adapter_id: string }).adapter_id;
    const config = await fleet.request(
      'GET',
      `/v1/adapters/${adapterId}/files/adapter_config.json`,
    );
    expect(config.status).toBe(200);
    const adapterConfig = config.body as { target_modules: string[]; fan_in_fan_out: boolean };
    expect([...adapterConfig.target_modules].sort()).toEqual(['q_proj', 'v_proj']);
    expect(adapterConfig.fan_in_fan_out).toBe(false);

    const weights = await fetch(
      `${fleet.baseUrl}/v1/adapters/${adapterId}/files/adapter_model.safetensors`,
      { headers: { authorization: `Bearer ${fleet.apiKey}` } },
    );
    expect(weights.status).toBe(200);
    const keys = [...readSafetensors(new Uint8Array(await weights.arrayBuffer())).tensors.keys()];
    expect(keys.sort()).toEqual(
      [0, 1].flatMap((i) =>
        ['q_proj', 'v_proj'].flatMap((m) => [
          `base_model.model.model.layers.${i}.self_attn.${m}.lora_A.weight`,
          `base_model.model.model.layers.${i}.self_attn.${m}.lora_B.weight`,
        ]),
      ),
    );
  });
});
