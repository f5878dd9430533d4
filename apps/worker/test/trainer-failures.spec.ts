/**
 * The trainer child's one classification of failures (issue 14 item 11) and its
 * out-of-memory report (issue 13): real lora-core and libs/data error types in, the kind,
 * message and `param` the worker acts on out.
 */
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DatasetValidationError, TokenizerLoadError, parseJsonlExamples } from '@lorafleet/data';
import {
  LoraConfigError,
  MemoryLimitError,
  ModelConfigError,
  ModelWeightsError,
  NoTrainableTokensError,
  NonFiniteLossError,
  SafetensorsError,
  TrainingConfigError,
  WasmHeapLimitError,
  initBackend,
  loadCausalLM,
  readSafetensors,
  writeSafetensors,
  type FineTunePreflight,
} from '@lorafleet/lora-core';
import { classifyFailure, outOfMemoryFailure } from '../src/trainer/trainer-failures';
import type { TrainerSpec } from '../src/trainer/trainer-protocol';

describe('classifyFailure', () => {
  it('refuses over the memory limit with the estimate and the limit', () => {
    expect(classifyFailure(new MemoryLimitError(5000, 4096, 'To fit: x.'))).toMatchObject({
      kind: 'memory_limit',
      estimateMb: 5000,
      limitMb: 4096,
      param: null,
      message: expect.stringMatching(/needs about 5,000 MiB but the memory limit is 4,096 MiB/),
    });
  });

  it('fails a run over the 4 GiB wasm heap once as out of memory, never handed back', () => {
    expect(classifyFailure(new WasmHeapLimitError(9000, 'To fit: x.'))).toMatchObject({
      kind: 'out_of_memory',
      param: null,
      message: expect.stringMatching(/about 9,000 MiB of activations .* in the wasm heap/),
    });
  });

  it('fails data that trains nothing as invalid_file on training.max_seq_length', () => {
    expect(classifyFailure(new NoTrainableTokensError(4, 4, 8, 70))).toMatchObject({
      kind: 'invalid_file',
      param: 'training.max_seq_length',
    });
  });

  it('fails bad options and data at once as invalid_input, naming the request field', () => {
    // The trainer names a bad field by its spec path, which is its request path too.
    expect(
      classifyFailure(new TrainingConfigError('bad', 'hyperparameters.batch_size')),
    ).toMatchObject({ kind: 'invalid_input', param: 'hyperparameters.batch_size' });
    // A field that is not the request's (the trainer's own checks) names none.
    expect(classifyFailure(new TrainingConfigError('bad', 'earlyStopping'))).toMatchObject({
      kind: 'invalid_input',
      param: null,
    });
    expect(classifyFailure(new LoraConfigError('no module "nope"', 'targetModules'))).toMatchObject(
      { kind: 'invalid_input', param: 'lora.target_modules' },
    );
    let invalidData: unknown;
    try {
      parseJsonlExamples('{"prompt": "a", "completion": "b"}\n{not json\n');
    } catch (error) {
      invalidData = error;
    }
    expect(invalidData).toBeInstanceOf(DatasetValidationError);
    expect(classifyFailure(invalidData).kind).toBe('invalid_input');
    expect(
      classifyFailure(new NonFiniteLossError(3, Number.NaN, Number.NaN, null, null)).kind,
    ).toBe('invalid_input');
  });

  it('fails a base model that cannot be read at once as invalid_model', () => {
    for (const error of [
      new ModelConfigError('n_layer must be a positive integer', 'n_layer'),
      new ModelWeightsError('missing tensor h.0.attn.c_attn.weight'),
      new SafetensorsError('HEADER_TOO_SMALL', 'file shorter than 8 bytes'),
      new TokenizerLoadError('tokenizer.json is not JSON', 'tokenizer.json'),
    ]) {
      expect(classifyFailure(error)).toMatchObject({ kind: 'invalid_model', param: null });
    }
  });

  it('fails a base model holding a NaN weight once as invalid_model, naming the tensor (item 18)', async () => {
    // The real loader's error: before, such a model trained into "training diverged … lower
    // the learning rate", an invalid_input that blamed the request.
    const source = path.join(__dirname, '../../../models/tiny-random-gpt2');
    const dir = await mkdtemp(path.join(tmpdir(), 'nan-model-'));
    try {
      await copyFile(path.join(source, 'config.json'), path.join(dir, 'config.json'));
      const tensors = Object.fromEntries(
        readSafetensors(await readFile(path.join(source, 'model.safetensors'))).tensors,
      );
      const name = Object.keys(tensors).find((k) => k.endsWith('mlp.c_fc.weight'))!;
      const data = new Float32Array(tensors[name].data);
      data[1] = Number.NaN;
      tensors[name] = { ...tensors[name], data };
      await writeFile(path.join(dir, 'model.safetensors'), writeSafetensors(tensors));
      await initBackend('cpu');
      const error = await loadCausalLM(dir).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ModelWeightsError);
      expect(classifyFailure(error)).toMatchObject({
        kind: 'invalid_model',
        param: null,
        message: expect.stringContaining(`tensor "${name}" holds a non-finite value`),
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('reports memory that ran out as such, never as the raw abort, and retries only the rest', () => {
    const abort = Object.assign(new Error('Aborted(). Build with -sASSERTIONS for more info.'), {
      name: 'RuntimeError',
    });
    const oom = classifyFailure(abort);
    expect(oom.kind).toBe('out_of_memory');
    expect(oom.message).toMatch(/^the trainer ran out of memory\. To fit:/);
    expect(oom.message).not.toMatch(/Aborted/);
    expect(classifyFailure(new Error('connect ECONNREFUSED 127.0.0.1:5432'))).toMatchObject({
      kind: 'retryable',
    });
  });
});

describe('outOfMemoryFailure', () => {
  it("gives the pre-flight's estimate and lora-core's advice for this run", async () => {
    const spec = {
      modelDir: path.join(__dirname, '../../../models/tiny-random-gpt2'),
      spec: {
        hyperparameters: { n_epochs: 1, batch_size: 4, learning_rate_multiplier: 1 },
        lora: { r: 4, alpha: 8, dropout: 0, use_rslora: false },
      },
    } as unknown as TrainerSpec;
    const preflight = {
      examples: 10,
      longestKeptTokens: 256,
      memoryEstimateMb: 5200,
      memoryLimitMb: 8000,
      gradientCheckpointing: false,
    } as FineTunePreflight;
    const failure = await outOfMemoryFailure(spec, preflight);
    expect(failure.kind).toBe('out_of_memory');
    expect(failure.message).toMatch(
      /^the trainer ran out of memory \(the pre-flight estimate was about 5,200 MiB, the memory limit 8,000 MiB\)\. To fit: turn on gradient checkpointing .*lower the batch size \(now 4\), shorten max_seq_length \(the longest example keeps 256 tokens\)/,
    );
  });
});
