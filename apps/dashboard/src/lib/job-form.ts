import type {
  HyperparametersInput,
  LoraConfigInput,
  TrainingOptionsInput,
} from '@lorafleet/contracts';

/**
 * The new-job form: string values as typed, bounds from the request contract
 * (libs/contracts: LoraConfigSchema, HyperparametersSchema, TrainingOptionsRequestSchema,
 * CreateFineTuningJobRequestSchema), validation, and the request body. A unit test checks
 * these bounds against the zod schemas, so the form cannot drift from what the API accepts.
 */

export interface JobCreateBody {
  model: string;
  training_file: string;
  validation_file?: string;
  suffix?: string;
  seed?: number;
  hyperparameters: HyperparametersInput;
  lora: LoraConfigInput;
  training: TrainingOptionsInput;
}

export type NumericField =
  | 'lora_r'
  | 'lora_alpha'
  | 'lora_dropout'
  | 'n_epochs'
  | 'batch_size'
  | 'learning_rate_multiplier'
  | 'max_steps'
  | 'max_seq_length'
  | 'seed';

export interface NumericFieldSpec {
  label: string;
  min: number;
  max: number;
  /** `min` itself is not allowed (a positive number). */
  minExclusive?: boolean;
  integer: boolean;
  /** The HTML `step` attribute. */
  step: string;
  /** Pre-filled value; '' leaves the field empty. */
  defaultValue: string;
  /** What an empty field means: the API's "auto", "not sent", or an error. */
  whenEmpty: 'auto' | 'omit' | 'required';
  hint: string;
}

export const NUMERIC_FIELDS: Readonly<Record<NumericField, NumericFieldSpec>> = {
  lora_r: {
    label: 'Rank (r)',
    min: 1,
    max: 256,
    integer: true,
    step: '1',
    defaultValue: '8',
    whenEmpty: 'required',
    hint: 'Size of the low-rank update; 4–16 suits most tasks.',
  },
  lora_alpha: {
    label: 'Alpha',
    min: 0,
    max: 4096,
    minExclusive: true,
    integer: false,
    step: 'any',
    defaultValue: '16',
    whenEmpty: 'required',
    hint: 'The update is scaled by alpha / r (alpha / √r with rsLoRA).',
  },
  lora_dropout: {
    label: 'Dropout',
    min: 0,
    max: 0.9,
    integer: false,
    step: '0.05',
    defaultValue: '0',
    whenEmpty: 'required',
    hint: 'Dropout on the LoRA input, 0 to 0.9.',
  },
  n_epochs: {
    label: 'Epochs',
    min: 1,
    max: 50,
    integer: true,
    step: '1',
    defaultValue: '',
    whenEmpty: 'auto',
    hint: 'Empty = auto (about 3 epochs, at least 100 example passes).',
  },
  batch_size: {
    label: 'Batch size',
    min: 1,
    max: 256,
    integer: true,
    step: '1',
    defaultValue: '',
    whenEmpty: 'auto',
    hint: 'Empty = auto (about 0.2 % of the examples).',
  },
  learning_rate_multiplier: {
    label: 'Learning rate multiplier',
    min: 0,
    max: 100,
    minExclusive: true,
    integer: false,
    step: 'any',
    defaultValue: '',
    whenEmpty: 'auto',
    hint: "Empty = auto (1 × the base model's learning rate, 2e-4 by default).",
  },
  max_steps: {
    label: 'Max steps',
    min: 1,
    max: 1_000_000,
    integer: true,
    step: '1',
    defaultValue: '',
    whenEmpty: 'omit',
    hint: 'Optional cap on optimizer steps, e.g. for a smoke run.',
  },
  max_seq_length: {
    label: 'Max sequence length',
    min: 8,
    max: 8192,
    integer: true,
    step: '1',
    // Empty lets the API pick min(1024, the model's context length): a fixed default would
    // exceed the context of small models and be refused.
    defaultValue: '',
    whenEmpty: 'omit',
    hint: "Tokens per example; longer examples are truncated. Empty: min(1024, the model's context length).",
  },
  seed: {
    label: 'Seed',
    min: 0,
    max: 2_147_483_647,
    integer: true,
    step: '1',
    defaultValue: '',
    whenEmpty: 'omit',
    hint: 'Optional; empty picks a random seed (recorded on the job).',
  },
};

export interface JobFormValues extends Record<NumericField, string> {
  model: string;
  training_file: string;
  validation_file: string;
  suffix: string;
  target_modules: string;
  use_rslora: boolean;
}

export type JobFormField = keyof JobFormValues;
export type JobFormErrors = Partial<Record<JobFormField, string>>;

export function defaultJobForm(): JobFormValues {
  const numeric = Object.fromEntries(
    (Object.keys(NUMERIC_FIELDS) as NumericField[]).map((f) => [f, NUMERIC_FIELDS[f].defaultValue]),
  ) as Record<NumericField, string>;
  return {
    ...numeric,
    model: '',
    training_file: '',
    validation_file: '',
    suffix: '',
    target_modules: '',
    use_rslora: false,
  };
}

export const SUFFIX_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const MODULE_PATTERN = /^[A-Za-z0-9_.]+$/;

/** '' → PEFT's per-architecture default (not sent); 'all-linear'; or a comma/space separated list. */
export function parseTargetModules(text: string): string[] | 'all-linear' | undefined {
  const trimmed = text.trim();
  if (!trimmed) return undefined;
  if (trimmed === 'all-linear') return 'all-linear';
  return trimmed.split(/[\s,]+/).filter(Boolean);
}

function checkNumber(field: NumericField, raw: string): string | null {
  const spec = NUMERIC_FIELDS[field];
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

export function validateJobForm(values: JobFormValues): JobFormErrors {
  const errors: JobFormErrors = {};
  if (!values.model) errors.model = 'Pick a base model.';
  if (!values.training_file)
    errors.training_file = 'Upload a JSONL file or pick one you uploaded before.';
  if (values.suffix && !SUFFIX_PATTERN.test(values.suffix)) {
    errors.suffix = 'Up to 64 letters, digits, - and _.';
  }
  for (const field of Object.keys(NUMERIC_FIELDS) as NumericField[]) {
    const problem = checkNumber(field, values[field]);
    if (problem) errors[field] = problem;
  }
  const modules = parseTargetModules(values.target_modules);
  if (Array.isArray(modules)) {
    const bad = modules.find((m) => !MODULE_PATTERN.test(m));
    if (bad) errors.target_modules = `"${bad}" is not a module name (letters, digits, _ and .).`;
    else if (modules.length > 64) errors.target_modules = 'At most 64 module names.';
  }
  return errors;
}

const numberOrAuto = (text: string): number | 'auto' => (text.trim() ? Number(text) : 'auto');
const numberOrUndefined = (text: string): number | undefined =>
  text.trim() ? Number(text) : undefined;

/** The POST /v1/fine_tuning/jobs body for valid form values. */
export function toCreateBody(values: JobFormValues): JobCreateBody {
  const body: JobCreateBody = {
    model: values.model,
    training_file: values.training_file,
    hyperparameters: {
      n_epochs: numberOrAuto(values.n_epochs),
      batch_size: numberOrAuto(values.batch_size),
      learning_rate_multiplier: numberOrAuto(values.learning_rate_multiplier),
    },
    lora: {
      r: Number(values.lora_r),
      alpha: Number(values.lora_alpha),
      dropout: Number(values.lora_dropout),
      use_rslora: values.use_rslora,
    },
    training: {},
  };
  const maxSeqLength = numberOrUndefined(values.max_seq_length);
  if (maxSeqLength !== undefined) body.training.max_seq_length = maxSeqLength;
  const modules = parseTargetModules(values.target_modules);
  if (modules !== undefined) body.lora.target_modules = modules;
  const maxSteps = numberOrUndefined(values.max_steps);
  if (maxSteps !== undefined) body.training.max_steps = maxSteps;
  const seed = numberOrUndefined(values.seed);
  if (seed !== undefined) body.seed = seed;
  if (values.validation_file) body.validation_file = values.validation_file;
  if (values.suffix) body.suffix = values.suffix;
  return body;
}

/** An Idempotency-Key, also outside secure contexts (crypto.randomUUID needs https or localhost). */
export function newIdempotencyKey(
  crypto: Pick<Crypto, 'getRandomValues'> = globalThis.crypto,
): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `dash-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}
