import { ChatCompletionRequestSchema, CompletionRequestSchema } from '@lorafleet/contracts';
import {
  SAMPLING_FIELDS,
  SAMPLING_FIELD_ORDER,
  defaultPlaygroundForm,
  toCompletionBody,
  validatePlaygroundForm,
  type PlaygroundFormValues,
} from './sampling-form';

const filled = (overrides: Partial<PlaygroundFormValues> = {}): PlaygroundFormValues => ({
  ...defaultPlaygroundForm(),
  prompt: 'Say hi: ',
  ...overrides,
});

const chatBody = (values: PlaygroundFormValues) => toCompletionBody('chat', 'm', values);

describe('playground sampling form', () => {
  it('defaults to greedy decoding and needs only a prompt', () => {
    expect(validatePlaygroundForm(defaultPlaygroundForm())).toEqual({ prompt: 'Type a prompt.' });
    expect(validatePlaygroundForm(filled({ prompt: '   ' }))).toEqual({
      prompt: 'Type a prompt.',
    });
    expect(validatePlaygroundForm(filled())).toEqual({});
    expect(chatBody(filled())).toEqual({
      model: 'm',
      messages: [{ role: 'user', content: 'Say hi: ' }],
      temperature: 0,
      top_p: 1,
      stream: true,
      stream_options: { include_usage: true },
    });
  });

  it('builds chat and completion bodies the API contract accepts', () => {
    const values = filled({ max_tokens: '12', temperature: '0.7', top_p: '0.9', seed: '-5' });
    const chat = chatBody(values);
    expect(chat).toMatchObject({ max_tokens: 12, temperature: 0.7, top_p: 0.9, seed: -5 });
    expect(ChatCompletionRequestSchema.safeParse(chat).success).toBe(true);
    const text = toCompletionBody('completion', 'ft:m:o:s:ftjob-1', values);
    expect(text).toEqual({
      model: 'ft:m:o:s:ftjob-1',
      prompt: 'Say hi: ',
      max_tokens: 12,
      temperature: 0.7,
      top_p: 0.9,
      seed: -5,
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(CompletionRequestSchema.safeParse(text).success).toBe(true);
  });

  it.each(SAMPLING_FIELD_ORDER)('bounds of %s match the contract', (field) => {
    const spec = SAMPLING_FIELDS[field];
    const accepts = (value: number) =>
      ChatCompletionRequestSchema.safeParse({
        model: 'm',
        messages: [{ role: 'user', content: 'x' }],
        [field]: value,
      }).success;
    const formAccepts = (value: number) =>
      validatePlaygroundForm(filled({ [field]: String(value) }))[field] === undefined;
    const lowest = spec.minExclusive ? spec.min + 0.001 : spec.min;
    const below = spec.minExclusive ? spec.min : spec.min - (spec.integer ? 1 : 0.01);
    for (const value of [lowest, spec.max]) {
      expect(accepts(value)).toBe(true);
      expect(formAccepts(value)).toBe(true);
    }
    expect(accepts(below)).toBe(false);
    expect(formAccepts(below)).toBe(false);
    // The contract has no upper bound on max_tokens (the context limits it); the form's cap only
    // stops typos, so only the others must be refused by both above their maximum.
    const above = spec.max + (spec.integer ? 1 : 0.01);
    expect(formAccepts(above)).toBe(false);
    if (field !== 'max_tokens') expect(accepts(above)).toBe(false);
    if (spec.integer) {
      expect(accepts(spec.min + 0.5)).toBe(false);
      expect(formAccepts(spec.min + 0.5)).toBe(false);
    }
    if (spec.defaultValue !== '') expect(accepts(Number(spec.defaultValue))).toBe(true);
  });

  it('explains each invalid field', () => {
    expect(
      validatePlaygroundForm(
        filled({ max_tokens: '2.5', temperature: '', top_p: '0', seed: 'abc' }),
      ),
    ).toEqual({
      max_tokens: 'Max tokens must be a whole number.',
      temperature: 'Temperature is required.',
      top_p: 'Top p must be greater than 0 and at most 1.',
      seed: 'Seed must be a number.',
    });
    expect(validatePlaygroundForm(filled({ temperature: '3' })).temperature).toBe(
      'Temperature must be at least 0 and at most 2.',
    );
  });
});
