import {
  CreateFineTuningJobRequestSchema,
  FineTuneJobPayloadSchema,
  LoraConfigSchema,
  QUEUE_NAMES,
  fineTunedModelName,
  openAiError,
} from '../src';

describe('contracts schemas', () => {
  it('accepts a minimal OpenAI job body and applies LoRA defaults', () => {
    const body = CreateFineTuningJobRequestSchema.parse({ model: 'tiny', training_file: 'file-1' });
    expect(body.model).toBe('tiny');
    expect(LoraConfigSchema.parse({})).toEqual({ r: 8, alpha: 16, dropout: 0, use_rslora: false });
  });

  it('rejects unknown fields and absurd hyperparameters', () => {
    expect(
      CreateFineTuningJobRequestSchema.safeParse({ model: 'm', training_file: 'f', x: 1 }).success,
    ).toBe(false);
    const bad = CreateFineTuningJobRequestSchema.safeParse({
      model: 'm',
      training_file: 'f',
      hyperparameters: { n_epochs: 1000 },
    });
    expect(bad.success).toBe(false);
    expect(LoraConfigSchema.safeParse({ r: 0 }).success).toBe(false);
    expect(LoraConfigSchema.safeParse({ target_modules: ['../x'] }).success).toBe(false);
  });

  it('keeps the queue name stable', () => {
    expect(QUEUE_NAMES.fineTune).toBe('fine-tune');
    expect(
      FineTuneJobPayloadSchema.safeParse({ schemaVersion: 2, jobId: 'a', tenantId: 'b' }).success,
    ).toBe(false);
  });

  it('builds OpenAI error bodies and fine-tuned model names', () => {
    expect(openAiError('model_not_found', 'no such model', 'model')).toEqual({
      error: {
        message: 'no such model',
        type: 'invalid_request_error',
        param: 'model',
        code: 'model_not_found',
      },
    });
    expect(fineTunedModelName('tiny', 'org-1', 'demo', 'ftjob-1')).toBe(
      'ft:tiny:org-1:demo:ftjob-1',
    );
  });
});
