import type { FileObject, FineTuningJob, FineTuningJobEstimate } from '@lorafleet/contracts';
import { useEffect, useRef, useState } from 'preact/hooks';
import { KeyValues } from '../components/key-values';
import { ApiError } from '../lib/api-client';
import type { ListPage, ModelObject } from '../lib/api-types';
import { describeBaseModel, formatBytes, parseStatusDetails } from '../lib/format';
import {
  NUMERIC_FIELDS,
  defaultJobForm,
  newIdempotencyKey,
  toCreateBody,
  validateJobForm,
  type JobFormErrors,
  type JobFormField,
  type JobFormValues,
  type NumericField,
} from '../lib/job-form';
import { ESTIMATE_DEBOUNCE_MS, estimateView } from '../lib/job-estimate';
import { jobUrl } from '../lib/routes';
import { navigate } from '../hooks/router';
import { api } from '../hooks/session';

/** API error `param` (e.g. `lora.r`, `training.max_steps`) → the form field that holds it. */
function fieldForParam(param: string | null): JobFormField | null {
  if (!param) return null;
  const last = param.split('.').pop() ?? param;
  const map: Record<string, JobFormField> = {
    model: 'model',
    training_file: 'training_file',
    validation_file: 'validation_file',
    suffix: 'suffix',
    seed: 'seed',
    r: 'lora_r',
    alpha: 'lora_alpha',
    dropout: 'lora_dropout',
    target_modules: 'target_modules',
    n_epochs: 'n_epochs',
    batch_size: 'batch_size',
    learning_rate_multiplier: 'learning_rate_multiplier',
    max_steps: 'max_steps',
    max_seq_length: 'max_seq_length',
  };
  return map[last] ?? null;
}

const FIELD_ORDER: JobFormField[] = [
  'training_file',
  'validation_file',
  'model',
  'suffix',
  'seed',
  'lora_r',
  'lora_alpha',
  'lora_dropout',
  'target_modules',
  'n_epochs',
  'batch_size',
  'learning_rate_multiplier',
  'max_steps',
  'max_seq_length',
];

/** A base model's picker entry: its id, then the facts the API reads from its config.json. */
function modelLabel(model: ModelObject): string {
  const facts = describeBaseModel(model);
  return facts ? `${model.id} (${facts})` : model.id;
}

const inputId = (field: JobFormField) => `field-${field.replace(/_/g, '-')}`;

/** The estimate panel: what the API answered for the form's current body. */
type EstimateState =
  | { kind: 'idle' }
  | { kind: 'loading' }
  | { kind: 'ready'; estimate: FineTuningJobEstimate }
  | { kind: 'error'; message: string };

interface UploadState {
  busy: boolean;
  file: FileObject | null;
  error: string | null;
}

export function NewJobPage() {
  const [values, setValues] = useState<JobFormValues>(defaultJobForm);
  const [errors, setErrors] = useState<JobFormErrors>({});
  const [submitted, setSubmitted] = useState(false);
  const [models, setModels] = useState<ModelObject[] | null>(null);
  const [files, setFiles] = useState<FileObject[]>([]);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [upload, setUpload] = useState<UploadState>({ busy: false, file: null, error: null });
  const [submitting, setSubmitting] = useState(false);
  const [submitError, setSubmitError] = useState<string | null>(null);
  const [estimate, setEstimate] = useState<EstimateState>({ kind: 'idle' });
  const idempotencyKey = useRef(newIdempotencyKey());
  const formRef = useRef<HTMLFormElement>(null);

  useEffect(() => {
    const controller = new AbortController();
    Promise.all([
      api.get<{ data: ModelObject[] }>('/v1/models', { signal: controller.signal }),
      api.get<ListPage<FileObject>>('/v1/files', { signal: controller.signal }),
    ])
      .then(([modelList, fileList]) => {
        const bases = modelList.data.filter((m) => !m.id.startsWith('ft:'));
        setModels(bases);
        setFiles(
          fileList.data
            .filter((f) => f.status === 'processed')
            .sort((a, b) => b.created_at - a.created_at),
        );
        setValues((v) => (v.model || bases.length === 0 ? v : { ...v, model: bases[0].id }));
      })
      .catch((error: unknown) => {
        if ((error as Error).name !== 'AbortError')
          setLoadError(error instanceof Error ? error.message : String(error));
      });
    return () => controller.abort();
  }, []);

  const set = <K extends JobFormField>(field: K, value: JobFormValues[K]) =>
    setValues((current) => ({ ...current, [field]: value }));

  // After the first submit, errors follow every edit (server-reported ones clear on the next edit).
  useEffect(() => {
    if (submitted) setErrors(validateJobForm(values));
  }, [values]);

  // As soon as the form is valid, and again after each pause in editing, ask the API what the
  // job would train, need and take (POST /v1/fine_tuning/jobs/estimate; it creates nothing).
  useEffect(() => {
    if (Object.keys(validateJobForm(values)).length > 0) {
      setEstimate({ kind: 'idle' });
      return;
    }
    const controller = new AbortController();
    const timer = setTimeout(() => {
      setEstimate({ kind: 'loading' });
      api
        .post<FineTuningJobEstimate>('/v1/fine_tuning/jobs/estimate', toCreateBody(values), {
          signal: controller.signal,
        })
        .then((answer) => setEstimate({ kind: 'ready', estimate: answer }))
        .catch((error: unknown) => {
          if ((error as Error).name === 'AbortError') return;
          setEstimate({
            kind: 'error',
            message: error instanceof Error ? error.message : String(error),
          });
        });
    }, ESTIMATE_DEBOUNCE_MS);
    return () => {
      clearTimeout(timer);
      controller.abort();
    };
  }, [values]);

  const onFileChosen = async (input: HTMLInputElement) => {
    const chosen = input.files?.[0];
    if (!chosen) return;
    // Let the same file be chosen again after it was fixed on disk.
    input.value = '';
    setUpload({ busy: true, file: null, error: null });
    try {
      const file = await api.uploadFile(chosen, chosen.name);
      setUpload({ busy: false, file, error: null });
      if (file.status === 'processed') {
        setFiles((list) => [file, ...list.filter((f) => f.id !== file.id)]);
        set('training_file', file.id);
      }
    } catch (error) {
      setUpload({
        busy: false,
        file: null,
        error: error instanceof Error ? error.message : String(error),
      });
    }
  };

  const focusFirstError = (found: JobFormErrors) => {
    const first = FIELD_ORDER.find((f) => found[f]);
    if (first)
      document
        .getElementById(
          first === 'training_file' && files.length === 0 ? 'training-upload' : inputId(first),
        )
        ?.focus();
  };

  const submit = async (event: Event) => {
    event.preventDefault();
    setSubmitted(true);
    setSubmitError(null);
    const found = validateJobForm(values);
    setErrors(found);
    if (Object.keys(found).length > 0) {
      focusFirstError(found);
      return;
    }
    setSubmitting(true);
    try {
      const job = await api.post<FineTuningJob>('/v1/fine_tuning/jobs', toCreateBody(values), {
        headers: { 'idempotency-key': idempotencyKey.current },
      });
      navigate(jobUrl(job.id));
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      const field = error instanceof ApiError ? fieldForParam(error.param) : null;
      if (field) {
        const next = { ...found, [field]: message };
        setErrors(next);
        focusFirstError(next);
      }
      setSubmitError(message);
      // A rejected body may be corrected and sent again: that is a new request.
      if (error instanceof ApiError && error.status < 500)
        idempotencyKey.current = newIdempotencyKey();
    } finally {
      setSubmitting(false);
    }
  };

  const errorId = (field: JobFormField) => `${inputId(field)}-error`;
  const describedBy = (field: JobFormField, hint = true) =>
    [hint ? `${inputId(field)}-hint` : '', errors[field] ? errorId(field) : '']
      .filter(Boolean)
      .join(' ') || undefined;
  const fieldError = (field: JobFormField) =>
    errors[field] ? (
      <p id={errorId(field)} class="field-error">
        {errors[field]}
      </p>
    ) : null;

  const numberField = (field: NumericField) => {
    const spec = NUMERIC_FIELDS[field];
    const placeholder =
      spec.whenEmpty === 'auto' ? 'auto' : spec.whenEmpty === 'omit' ? 'none' : undefined;
    return (
      <div class="field" key={field}>
        <label for={inputId(field)}>{spec.label}</label>
        <input
          id={inputId(field)}
          name={field}
          type="number"
          inputMode={spec.integer ? 'numeric' : 'decimal'}
          min={spec.minExclusive ? undefined : spec.min}
          max={spec.max}
          step={spec.step}
          placeholder={placeholder}
          value={values[field]}
          required={spec.whenEmpty === 'required'}
          aria-invalid={errors[field] ? true : undefined}
          aria-describedby={describedBy(field)}
          onInput={(e) => set(field, e.currentTarget.value)}
        />
        <p id={`${inputId(field)}-hint`} class="hint">
          {spec.hint} Range {spec.minExclusive ? `>${spec.min}` : spec.min}–
          {spec.max.toLocaleString('en-US')}.
        </p>
        {fieldError(field)}
      </div>
    );
  };

  const uploaded = upload.file;
  const problems =
    uploaded?.status === 'error' ? parseStatusDetails(uploaded.status_details) : null;
  const errorCount = Object.keys(errors).length;

  return (
    <section aria-labelledby="page-title">
      <h1 id="page-title" tabIndex={-1}>
        New fine-tuning job
      </h1>
      {loadError ? (
        <p class="alert" role="alert">
          {loadError}
        </p>
      ) : null}
      <form ref={formRef} onSubmit={(e) => void submit(e)} noValidate class="job-form">
        <fieldset class="card">
          <legend>Training data</legend>
          <div class="field">
            <label for="training-upload">Upload a JSONL file</label>
            <input
              id="training-upload"
              type="file"
              accept=".jsonl,.json,.txt,application/jsonl,application/json,text/plain"
              aria-describedby="training-upload-hint"
              disabled={upload.busy}
              onChange={(e) => void onFileChosen(e.currentTarget)}
            />
            <p id="training-upload-hint" class="hint">
              One JSON object per line: <code>{'{"messages": […]}'}</code>,{' '}
              <code>{'{"prompt", "completion"}'}</code> or <code>{'{"text"}'}</code>. The file is
              validated on upload.
            </p>
          </div>
          <div aria-live="polite" id="upload-result">
            {upload.busy ? <p class="muted">Uploading and validating…</p> : null}
            {upload.error ? <p class="alert">Upload failed: {upload.error}</p> : null}
            {uploaded?.status === 'processed' ? (
              <p class="success">
                ✓ {uploaded.filename} is valid ({formatBytes(uploaded.bytes)}) and selected as the
                training file.
              </p>
            ) : null}
          </div>
          {problems ? (
            <div class="alert file-problems" role="alert" id="file-problems">
              <p>
                <strong>{uploaded!.filename} cannot be used for training.</strong>{' '}
                {problems.summary ?? ''} Fix these lines and upload it again:
              </p>
              <ul>
                {problems.problems.map((p, index) => (
                  <li key={index}>
                    {p.line !== null ? <strong>Line {p.line}:</strong> : null} {p.reason}
                  </li>
                ))}
              </ul>
            </div>
          ) : null}
          <div class="field">
            <label for={inputId('training_file')}>Training file</label>
            <select
              id={inputId('training_file')}
              value={values.training_file}
              aria-invalid={errors.training_file ? true : undefined}
              aria-describedby={describedBy('training_file', false)}
              onChange={(e) => set('training_file', e.currentTarget.value)}
            >
              <option value="">{files.length ? 'Choose a file…' : 'Upload a file first'}</option>
              {files.map((f) => (
                <option key={f.id} value={f.id}>
                  {f.filename} ({f.id}, {formatBytes(f.bytes)})
                </option>
              ))}
            </select>
            {fieldError('training_file')}
          </div>
          <div class="field">
            <label for={inputId('validation_file')}>Validation file (optional)</label>
            <select
              id={inputId('validation_file')}
              value={values.validation_file}
              onChange={(e) => set('validation_file', e.currentTarget.value)}
            >
              <option value="">None</option>
              {files
                .filter((f) => f.id !== values.training_file)
                .map((f) => (
                  <option key={f.id} value={f.id}>
                    {f.filename} ({f.id})
                  </option>
                ))}
            </select>
          </div>
        </fieldset>

        <fieldset class="card">
          <legend>Model</legend>
          <div class="field">
            <label for={inputId('model')}>Base model</label>
            <select
              id={inputId('model')}
              value={values.model}
              disabled={models === null}
              aria-invalid={errors.model ? true : undefined}
              aria-describedby={describedBy('model', false)}
              onChange={(e) => set('model', e.currentTarget.value)}
            >
              {models === null ? <option value="">Loading models…</option> : null}
              {models?.length === 0 ? <option value="">No base models installed</option> : null}
              {models?.map((m) => (
                <option key={m.id} value={m.id}>
                  {modelLabel(m)}
                </option>
              ))}
            </select>
            {fieldError('model')}
          </div>
          <div class="field">
            <label for={inputId('suffix')}>Suffix (optional)</label>
            <input
              id={inputId('suffix')}
              type="text"
              maxLength={64}
              autoComplete="off"
              value={values.suffix}
              aria-invalid={errors.suffix ? true : undefined}
              aria-describedby={describedBy('suffix')}
              onInput={(e) => set('suffix', e.currentTarget.value)}
            />
            <p id={`${inputId('suffix')}-hint`} class="hint">
              Part of the fine-tuned model name (<code>ft:model:org:suffix:job</code>); letters,
              digits, - and _.
            </p>
            {fieldError('suffix')}
          </div>
          {numberField('seed')}
        </fieldset>

        <fieldset class="card">
          <legend>LoRA</legend>
          <div class="form-grid">
            {numberField('lora_r')}
            {numberField('lora_alpha')}
            {numberField('lora_dropout')}
            <div class="field">
              <label for={inputId('target_modules')}>Target modules</label>
              <input
                id={inputId('target_modules')}
                type="text"
                autoComplete="off"
                placeholder="architecture default"
                value={values.target_modules}
                aria-invalid={errors.target_modules ? true : undefined}
                aria-describedby={describedBy('target_modules')}
                onInput={(e) => set('target_modules', e.currentTarget.value)}
              />
              <p id={`${inputId('target_modules')}-hint`} class="hint">
                Empty = PEFT’s default for the architecture; <code>all-linear</code>; or names such
                as <code>c_attn, c_proj</code>.
              </p>
              {fieldError('target_modules')}
            </div>
          </div>
          <label class="checkbox">
            <input
              type="checkbox"
              checked={values.use_rslora}
              onChange={(e) => set('use_rslora', e.currentTarget.checked)}
            />
            Use rsLoRA (scale by alpha / √r)
          </label>
        </fieldset>

        <fieldset class="card">
          <legend>Hyperparameters</legend>
          <div class="form-grid">
            {numberField('n_epochs')}
            {numberField('batch_size')}
            {numberField('learning_rate_multiplier')}
            {numberField('max_steps')}
            {numberField('max_seq_length')}
          </div>
        </fieldset>

        <section class="card job-estimate" id="job-estimate" aria-labelledby="job-estimate-title">
          <h2 id="job-estimate-title">Estimate</h2>
          <div aria-live="polite">{estimatePanel(estimate)}</div>
        </section>

        {submitted && errorCount > 0 ? (
          <p class="alert" role="alert">
            Please fix{' '}
            {errorCount === 1 ? 'the highlighted field' : `the ${errorCount} highlighted fields`}.
          </p>
        ) : null}
        {submitError && errorCount === 0 ? (
          <p class="alert" role="alert">
            {submitError}
          </p>
        ) : null}
        <div class="form-actions">
          <button type="submit" class="button button-primary" disabled={submitting || upload.busy}>
            {submitting ? 'Starting…' : 'Start fine-tuning'}
          </button>
        </div>
      </form>
    </section>
  );
}

function estimatePanel(state: EstimateState) {
  switch (state.kind) {
    case 'idle':
      return <p class="muted">Fill in the form to see what the job would train and take.</p>;
    case 'loading':
      return <p class="muted">Estimating…</p>;
    case 'error':
      return <p class="alert">The API would refuse this job: {state.message}</p>;
    case 'ready': {
      const view = estimateView(state.estimate);
      return (
        <>
          <KeyValues items={view.rows} id="estimate-figures" />
          {view.quotaProblem ? <p class="alert">{view.quotaProblem}</p> : null}
          {view.noBackends ? (
            <p class="muted">{view.noBackends}</p>
          ) : (
            <div class="table-wrap">
              <table class="table" id="estimate-backends">
                <caption>Wall time on each backend of the fleet</caption>
                <thead>
                  <tr>
                    <th scope="col">Backend</th>
                    <th scope="col">Training time</th>
                    <th scope="col">Memory</th>
                    <th scope="col">Note</th>
                  </tr>
                </thead>
                <tbody>
                  {view.backends.map((b) => (
                    <tr key={b.backend}>
                      <th scope="row">{b.backend}</th>
                      <td>{b.time}</td>
                      <td>{b.memory}</td>
                      <td>{b.note}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </>
      );
    }
  }
}
