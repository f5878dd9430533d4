import type { PlaygroundMode } from './playground-url';

/**
 * The playground's prompt and sampling controls: string values as typed, bounds from the
 * request contract (libs/contracts serving.ts, `samplingShape`: OpenAI's bounds), validation,
 * and the request body for each column. A unit test holds these bounds to the zod schemas.
 */

export type SamplingField = 'max_tokens' | 'temperature' | 'top_p' | 'seed';

export interface SamplingFieldSpec {
  label: string;
  min: number;
  max: number;
  /** `min` itself is not allowed (a positive number). */
  minExclusive?: boolean;
  integer: boolean;
  /** The HTML `step` attribute. */
  step: string;
  defaultValue: string;
  /** What an empty field means: not sent (the API's default), or an error. */
  whenEmpty: 'omit' | 'required';
  hint: string;
}

/** The API takes any max_tokens the context leaves room for; this only stops typos. */
const MAX_TOKENS_CAP = 1_000_000;

export const SAMPLING_FIELDS: Readonly<Record<SamplingField, SamplingFieldSpec>> = {
  max_tokens: {
    label: 'Max tokens',
    min: 1,
    max: MAX_TOKENS_CAP,
    integer: true,
    step: '1',
    // Empty sends none: a fixed number would not fit the context of the tiny models.
    defaultValue: '',
    whenEmpty: 'omit',
    hint: 'Empty: the API’s default (chat: what the context leaves; completion: 16).',
  },
  temperature: {
    label: 'Temperature',
    min: 0,
    max: 2,
    integer: false,
    step: '0.1',
    // Greedy by default, so the columns differ only by their weights.
    defaultValue: '0',
    whenEmpty: 'required',
    hint: '0 is greedy (the most likely token each time).',
  },
  top_p: {
    label: 'Top p',
    min: 0,
    max: 1,
    minExclusive: true,
    integer: false,
    step: '0.05',
    defaultValue: '1',
    whenEmpty: 'required',
    hint: 'Nucleus sampling: keep the most likely tokens up to this probability.',
  },
  seed: {
    label: 'Seed',
    min: -(2 ** 31),
    max: 2 ** 31 - 1,
    integer: true,
    step: '1',
    defaultValue: '',
    whenEmpty: 'omit',
    hint: 'Optional; the same seed gives the same sampled answer.',
  },
};

export const SAMPLING_FIELD_ORDER: readonly SamplingField[] = [
  'max_tokens',
  'temperature',
  'top_p',
  'seed',
];

export interface PlaygroundFormValues extends Record<SamplingField, string> {
  prompt: string;
}

export type PlaygroundFormField = keyof PlaygroundFormValues;
export type PlaygroundFormErrors = Partial<Record<PlaygroundFormField, string>>;

export function defaultPlaygroundForm(): PlaygroundFormValues {
  return {
    prompt: '',
    max_tokens: SAMPLING_FIELDS.max_tokens.defaultValue,
    temperature: SAMPLING_FIELDS.temperature.defaultValue,
    top_p: SAMPLING_FIELDS.top_p.defaultValue,
    seed: SAMPLING_FIELDS.seed.defaultValue,
  };
}

function checkNumber(field: SamplingField, raw: string): string | null {
  const spec = SAMPLING_FIELDS[field];
  const text = raw.trim();
  if (!text) return spec.whenEmpty === 'required' ? `${spec.label} is required.` : null;
  const value = Number(text);
  if (!Number.isFinite(value)) return `${spec.label} must be a number.`;
  if (spec.integer && !Number.isInteger(value)) return `${spec.label} must be a whole number.`;
  const lowOk = spec.minExclusive ? value > spec.min : value >= spec.min;
  if (!lowOk || value > spec.max) {
    const low = spec.minExclusive ? `greater than ${spec.min}` : `at least ${spec.min}`;
    return `${spec.label} must be ${low} and at most ${spec.max.toLocaleString('en-US')}.`;
  }
  return null;
}

export function validatePlaygroundForm(values: PlaygroundFormValues): PlaygroundFormErrors {
  const errors: PlaygroundFormErrors = {};
  if (!values.prompt.trim()) errors.prompt = 'Type a prompt.';
  for (const field of SAMPLING_FIELD_ORDER) {
    const problem = checkNumber(field, values[field]);
    if (problem) errors[field] = problem;
  }
  return errors;
}

export interface CompletionRequestBody {
  model: string;
  messages?: { role: 'user'; content: string }[];
  prompt?: string;
  max_tokens?: number;
  temperature: number;
  top_p: number;
  seed?: number;
  stream: true;
  stream_options: { include_usage: true };
}

/** The endpoint each mode calls. */
export const COMPLETION_PATHS: Readonly<Record<PlaygroundMode, string>> = {
  chat: '/v1/chat/completions',
  completion: '/v1/completions',
};

/**
 * One column's streamed request for valid form values. Usage is asked for, so the last event
 * carries the exact token count (the text chunks alone may merge tokens).
 */
export function toCompletionBody(
  mode: PlaygroundMode,
  model: string,
  values: PlaygroundFormValues,
): CompletionRequestBody {
  const body: CompletionRequestBody = {
    model,
    ...(mode === 'chat'
      ? { messages: [{ role: 'user', content: values.prompt }] }
      : { prompt: values.prompt }),
    temperature: Number(values.temperature),
    top_p: Number(values.top_p),
    stream: true,
    stream_options: { include_usage: true },
  };
  if (values.max_tokens.trim()) body.max_tokens = Number(values.max_tokens);
  if (values.seed.trim()) body.seed = Number(values.seed);
  return body;
}
