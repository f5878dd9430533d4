import {
  ConfigError,
  apiEnvShape,
  parseEnv,
  resolveHyperparameters,
  workerEnvShape,
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

describe('env validation', () => {
  it('applies defaults and names every bad variable', () => {
    const env = parseEnv(apiEnvShape, {
      DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/x',
      REDIS_URL: 'redis://127.0.0.1:6379',
    });
    expect(env.PORT).toBe(3000);
    expect(env.LORAFLEET_MODELS_DIR).toBe('./models');
    expect(() => parseEnv(apiEnvShape, { DATABASE_URL: 'mysql://x', PORT: 'abc' })).toThrow(
      /DATABASE_URL: must be a postgres: or postgresql: URL[\s\S]*REDIS_URL: required[\s\S]*PORT/,
    );
  });

  it('bounds upload lines at 1 MiB by default; LORAFLEET_UPLOAD_MAX_LINE_BYTES must be a positive integer', () => {
    const base = { DATABASE_URL: 'postgres://h/db', REDIS_URL: 'redis://h' };
    expect(parseEnv(apiEnvShape, base).LORAFLEET_UPLOAD_MAX_LINE_BYTES).toBe(1024 * 1024);
    expect(
      parseEnv(apiEnvShape, { ...base, LORAFLEET_UPLOAD_MAX_LINE_BYTES: '4096' })
        .LORAFLEET_UPLOAD_MAX_LINE_BYTES,
    ).toBe(4096);
    for (const bad of ['0', '-1', '2.5', 'lots']) {
      expect(() =>
        parseEnv(apiEnvShape, { ...base, LORAFLEET_UPLOAD_MAX_LINE_BYTES: bad }),
      ).toThrow(/LORAFLEET_UPLOAD_MAX_LINE_BYTES/);
    }
  });

  it('rejects unknown backends', () => {
    expect(() =>
      parseEnv(workerEnvShape, {
        DATABASE_URL: 'postgres://h/db',
        REDIS_URL: 'redis://h',
        LORAFLEET_BACKEND: 'quantum',
      }),
    ).toThrow(ConfigError);
  });
});

describe('auto hyperparameters', () => {
  const auto = { n_epochs: 'auto', batch_size: 'auto', learning_rate_multiplier: 'auto' } as const;
  it('follows the OpenAI epoch heuristic', () => {
    expect(resolveHyperparameters(auto, 10).n_epochs).toBe(10);
    expect(resolveHyperparameters(auto, 2).n_epochs).toBe(25);
    expect(resolveHyperparameters(auto, 1000).n_epochs).toBe(3);
    expect(resolveHyperparameters(auto, 20_000).n_epochs).toBe(1);
    expect(resolveHyperparameters({ ...auto, n_epochs: 7 }, 1000)).toEqual({
      n_epochs: 7,
      batch_size: 2,
      learning_rate_multiplier: 1,
    });
  });
});
