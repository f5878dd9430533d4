import {
  CreateFineTuningJobRequestSchema,
  HyperparametersSchema,
  LoraConfigSchema,
  TrainingOptionsRequestSchema,
} from '@lorafleet/contracts';
import type { z } from 'zod';
import {
  NUMERIC_FIELDS,
  defaultJobForm,
  newIdempotencyKey,
  parseTargetModules,
  toCreateBody,
  validateJobForm,
  type JobFormValues,
  type NumericField,
} from './job-form';

const filled = (overrides: Partial<JobFormValues> = {}): JobFormValues => ({
  ...defaultJobForm(),
  model: 'tiny-random-gpt2',
  training_file: 'file-abc',
  ...overrides,
});

/** Where each form field lands in the request, to check its bounds against the zod schema. */
const SCHEMA_OF: Record<Exclude<NumericField, 'seed'>, [z.ZodType, string]> = {
  lora_r: [LoraConfigSchema, 'r'],
  lora_alpha: [LoraConfigSchema, 'alpha'],
  lora_dropout: [LoraConfigSchema, 'dropout'],
  n_epochs: [HyperparametersSchema, 'n_epochs'],
  batch_size: [HyperparametersSchema, 'batch_size'],
  learning_rate_multiplier: [HyperparametersSchema, 'learning_rate_multiplier'],
  max_steps: [TrainingOptionsRequestSchema, 'max_steps'],
  max_seq_length: [TrainingOptionsRequestSchema, 'max_seq_length'],
};

describe('job form', () => {
  it('defaults need only a model and a training file', () => {
    expect(validateJobForm(defaultJobForm())).toEqual({
      model: 'Pick a base model.',
      training_file: 'Upload a JSONL file or pick one you uploaded before.',
    });
    expect(validateJobForm(filled())).toEqual({});
  });

  it('builds a body the API contract accepts, with "auto" for empty hyperparameters', () => {
    const body = toCreateBody(filled());
    expect(body).toEqual({
      model: 'tiny-random-gpt2',
      training_file: 'file-abc',
      hyperparameters: { n_epochs: 'auto', batch_size: 'auto', learning_rate_multiplier: 'auto' },
      lora: { r: 8, alpha: 16, dropout: 0, use_rslora: false },
      // No max_seq_length: the API derives it from the model (issue 14, item 8).
      training: {},
    });
    expect(CreateFineTuningJobRequestSchema.safeParse(body).success).toBe(true);
  });

  it('sends every optional field the user filled in', () => {
    const body = toCreateBody(
      filled({
        suffix: 'demo_1',
        seed: '7',
        validation_file: 'file-val',
        target_modules: 'c_attn, c_proj',
        use_rslora: true,
        n_epochs: '2',
        batch_size: '4',
        learning_rate_multiplier: '0.5',
        max_steps: '20',
        max_seq_length: '64',
      }),
    );
    expect(body).toMatchObject({
      suffix: 'demo_1',
      seed: 7,
      validation_file: 'file-val',
      lora: { target_modules: ['c_attn', 'c_proj'], use_rslora: true },
      hyperparameters: { n_epochs: 2, batch_size: 4, learning_rate_multiplier: 0.5 },
      training: { max_steps: 20, max_seq_length: 64 },
    });
    expect(CreateFineTuningJobRequestSchema.safeParse(body).success).toBe(true);
  });

  it.each(Object.keys(SCHEMA_OF) as (keyof typeof SCHEMA_OF)[])(
    'bounds of %s match the contract',
    (field) => {
      const spec = NUMERIC_FIELDS[field];
      const [schema, key] = SCHEMA_OF[field];
      const accepts = (value: number) => schema.safeParse({ [key]: value }).success;
      const formAccepts = (value: number) =>
        validateJobForm(filled({ [field]: String(value) }))[field] === undefined;
      const below = spec.minExclusive ? spec.min : spec.min - (spec.integer ? 1 : 0.01);
      const lowest = spec.minExclusive ? spec.min + 0.001 : spec.min;
      const above = spec.max + (spec.integer ? 1 : 0.01);
      for (const value of [lowest, spec.max]) {
        expect(accepts(value)).toBe(true);
        expect(formAccepts(value)).toBe(true);
      }
      for (const value of [below, above]) {
        expect(accepts(value)).toBe(false);
        expect(formAccepts(value)).toBe(false);
      }
      if (spec.integer) {
        expect(accepts(spec.min + 0.5)).toBe(false);
        expect(formAccepts(spec.min + 0.5)).toBe(false);
      }
      if (spec.defaultValue !== '') expect(accepts(Number(spec.defaultValue))).toBe(true);
    },
  );

  it('seed bounds match the contract', () => {
    const body = (seed: string) => toCreateBody(filled({ seed }));
    expect(CreateFineTuningJobRequestSchema.safeParse(body('2147483647')).success).toBe(true);
    expect(validateJobForm(filled({ seed: '2147483648' })).seed).toBeDefined();
    expect(CreateFineTuningJobRequestSchema.safeParse(body('2147483648')).success).toBe(false);
  });

  it('explains each invalid field', () => {
    const errors = validateJobForm(
      filled({
        lora_r: '0',
        lora_alpha: '',
        suffix: 'has space',
        target_modules: 'c_attn, bad-name',
        n_epochs: '1.5',
      }),
    );
    expect(errors).toEqual({
      lora_r: 'Rank (r) must be at least 1 and at most 256.',
      lora_alpha: 'Alpha is required.',
      suffix: 'Up to 64 letters, digits, - and _.',
      target_modules: '"bad-name" is not a module name (letters, digits, _ and .).',
      n_epochs: 'Epochs must be a whole number.',
    });
    const { success } = LoraConfigSchema.safeParse({ target_modules: ['bad-name'] });
    expect(success).toBe(false);
  });

  it('parses target modules', () => {
    expect(parseTargetModules('')).toBeUndefined();
    expect(parseTargetModules(' all-linear ')).toBe('all-linear');
    expect(parseTargetModules('q_proj,v_proj  o_proj')).toEqual(['q_proj', 'v_proj', 'o_proj']);
  });

  it('makes idempotency keys the API accepts (1–255 visible ASCII)', () => {
    const a = newIdempotencyKey();
    expect(a).toMatch(/^[\x21-\x7e]{1,255}$/);
    expect(newIdempotencyKey()).not.toBe(a);
  });
});
