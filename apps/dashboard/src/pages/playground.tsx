import { useEffect, useState } from 'preact/hooks';
import { Link } from '../components/link';
import { PlaygroundColumnCard } from '../components/playground/playground-column';
import { navigate } from '../hooks/router';
import { api } from '../hooks/session';
import { usePlaygroundRun } from '../hooks/use-playground-run';
import type { ModelObject } from '../lib/api-types';
import { describeBaseModel } from '../lib/format';
import {
  MAX_PLAYGROUND_ADAPTERS,
  groupModels,
  playgroundUrl,
  resolveSelection,
  type PlaygroundModels,
  type PlaygroundSelection,
} from '../lib/playground-url';
import {
  SAMPLING_FIELDS,
  SAMPLING_FIELD_ORDER,
  defaultPlaygroundForm,
  validatePlaygroundForm,
  type PlaygroundFormErrors,
  type PlaygroundFormField,
  type PlaygroundFormValues,
  type SamplingField,
} from '../lib/sampling-form';

const inputId = (field: PlaygroundFormField) => `playground-${field.replace(/_/g, '-')}`;

/**
 * Compare a base model and up to three of the tenant's adapters for it on one prompt, side by
 * side, each answer streamed with its time to first token and tokens/s. The base, adapters and
 * mode live in the URL (a job's "Try it" link opens one), the prompt and sampling in the page.
 */
export function PlaygroundPage({ selection }: { selection: PlaygroundSelection }) {
  const [models, setModels] = useState<PlaygroundModels | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [values, setValues] = useState<PlaygroundFormValues>(defaultPlaygroundForm);
  const [errors, setErrors] = useState<PlaygroundFormErrors>({});
  const [submitted, setSubmitted] = useState(false);
  const run = usePlaygroundRun();

  useEffect(() => {
    const controller = new AbortController();
    api
      .get<{ data: ModelObject[] }>('/v1/models', { signal: controller.signal })
      .then((list) => setModels(groupModels(list.data)))
      .catch((error: unknown) => {
        if ((error as Error).name !== 'AbortError')
          setLoadError(error instanceof Error ? error.message : String(error));
      });
    return () => controller.abort();
  }, []);

  // After the first send, errors follow every edit.
  useEffect(() => {
    if (submitted) setErrors(validatePlaygroundForm(values));
  }, [values]);

  const resolved = models ? resolveSelection(selection, models) : null;
  const baseModel = models?.bases.find((m) => m.id === resolved?.base) ?? null;
  const available = resolved?.base ? (models?.adaptersByBase.get(resolved.base) ?? []) : [];
  const chosen = resolved?.adapters ?? [];

  /** Base, adapters and mode are URL state: replace, so Back leaves the page as usual. */
  const select = (next: Partial<PlaygroundSelection>) =>
    navigate(
      playgroundUrl({
        base: resolved?.base ?? selection.base,
        adapters: chosen,
        mode: selection.mode,
        ...next,
      }),
      { replace: true },
    );

  const toggleAdapter = (id: string, on: boolean) =>
    select({ adapters: on ? [...chosen, id] : chosen.filter((a) => a !== id) });

  const set = (field: PlaygroundFormField, value: string) =>
    setValues((current) => ({ ...current, [field]: value }));

  const send = (event?: Event) => {
    event?.preventDefault();
    setSubmitted(true);
    const found = validatePlaygroundForm(values);
    setErrors(found);
    const first = (['prompt', ...SAMPLING_FIELD_ORDER] as PlaygroundFormField[]).find(
      (f) => found[f],
    );
    if (first) {
      document.getElementById(inputId(first))?.focus();
      return;
    }
    if (!resolved?.base || run.running) return;
    void run.send(
      [
        { model: resolved.base, isBase: true },
        ...chosen.map((model) => ({ model, isBase: false })),
      ],
      selection.mode,
      values,
    );
  };

  const errorId = (field: PlaygroundFormField) => `${inputId(field)}-error`;
  const describedBy = (field: PlaygroundFormField) =>
    [`${inputId(field)}-hint`, errors[field] ? errorId(field) : ''].filter(Boolean).join(' ');
  const fieldError = (field: PlaygroundFormField) =>
    errors[field] ? (
      <p id={errorId(field)} class="field-error">
        {errors[field]}
      </p>
    ) : null;

  const numberField = (field: SamplingField) => {
    const spec = SAMPLING_FIELDS[field];
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
          placeholder={spec.whenEmpty === 'omit' ? 'API default' : undefined}
          value={values[field]}
          required={spec.whenEmpty === 'required'}
          aria-invalid={errors[field] ? true : undefined}
          aria-describedby={describedBy(field)}
          onInput={(e) => set(field, e.currentTarget.value)}
        />
        <p id={`${inputId(field)}-hint`} class="hint">
          {spec.hint}
        </p>
        {fieldError(field)}
      </div>
    );
  };

  return (
    <section aria-labelledby="page-title" class="playground">
      <div class="page-head">
        <h1 id="page-title" tabIndex={-1}>
          Playground
        </h1>
      </div>
      <p class="muted">
        Send one prompt to a base model and to up to {MAX_PLAYGROUND_ADAPTERS} of your adapters for
        it, and compare their streamed answers.
      </p>
      {loadError ? (
        <p class="alert" role="alert">
          Could not load the models: {loadError}
        </p>
      ) : null}
      {resolved && resolved.problems.length > 0 ? (
        <div class="notice card" role="alert" id="playground-selection-problems">
          <ul>
            {resolved.problems.map((problem) => (
              <li key={problem}>{problem}</li>
            ))}
          </ul>
        </div>
      ) : null}
      <form onSubmit={send} noValidate class="playground-form">
        <fieldset class="card">
          <legend>Models</legend>
          <div class="field">
            <label for="playground-base">Base model</label>
            <select
              id="playground-base"
              value={resolved?.base ?? ''}
              disabled={models === null || models.bases.length === 0}
              aria-describedby="playground-base-hint"
              onChange={(e) => select({ base: e.currentTarget.value, adapters: [] })}
            >
              {models === null ? <option value="">Loading models…</option> : null}
              {models?.bases.length === 0 ? (
                <option value="">No base models installed</option>
              ) : null}
              {models?.bases.map((m) => {
                const facts = describeBaseModel(m);
                return (
                  <option key={m.id} value={m.id}>
                    {facts ? `${m.id} (${facts})` : m.id}
                  </option>
                );
              })}
            </select>
            <p id="playground-base-hint" class="hint">
              The first column answers with the base model alone.
            </p>
          </div>
          <fieldset class="adapter-choices" aria-describedby="playground-adapters-hint">
            <legend>Adapters (up to {MAX_PLAYGROUND_ADAPTERS})</legend>
            <p id="playground-adapters-hint" class="hint">
              Your fine-tuned models for {baseModel?.id ?? 'this base'}; each adds a column.
            </p>
            {available.length === 0 ? (
              <p class="muted" id="playground-no-adapters">
                {models === null ? (
                  'Loading…'
                ) : (
                  <>
                    No fine-tuned models for this base yet.{' '}
                    <Link href="/jobs/new">Start a job</Link> to train one.
                  </>
                )}
              </p>
            ) : (
              <ul class="adapter-list">
                {available.map((m) => {
                  const checked = chosen.includes(m.id);
                  return (
                    <li key={m.id}>
                      <label class="checkbox">
                        <input
                          type="checkbox"
                          name="adapter"
                          value={m.id}
                          checked={checked}
                          disabled={!checked && chosen.length >= MAX_PLAYGROUND_ADAPTERS}
                          onChange={(e) => toggleAdapter(m.id, e.currentTarget.checked)}
                        />
                        <span class="mono wrap">{m.id}</span>
                      </label>
                    </li>
                  );
                })}
              </ul>
            )}
          </fieldset>
        </fieldset>

        <fieldset class="card">
          <legend>Prompt</legend>
          <fieldset class="mode-choice">
            <legend>Endpoint</legend>
            <label class="checkbox">
              <input
                type="radio"
                name="mode"
                value="chat"
                checked={selection.mode === 'chat'}
                onChange={() => select({ mode: 'chat' })}
              />
              <span>
                Chat (<code>/v1/chat/completions</code>)
              </span>
            </label>
            <label class="checkbox">
              <input
                type="radio"
                name="mode"
                value="completion"
                checked={selection.mode === 'completion'}
                onChange={() => select({ mode: 'completion' })}
              />
              <span>
                Completion (<code>/v1/completions</code>)
              </span>
            </label>
          </fieldset>
          <div class="field">
            <label for={inputId('prompt')}>
              {selection.mode === 'chat' ? 'User message' : 'Prompt'}
            </label>
            <textarea
              id={inputId('prompt')}
              rows={4}
              value={values.prompt}
              aria-invalid={errors.prompt ? true : undefined}
              aria-describedby={describedBy('prompt')}
              onInput={(e) => set('prompt', e.currentTarget.value)}
              onKeyDown={(e) => {
                if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) send(e);
              }}
            />
            <p id={`${inputId('prompt')}-hint`} class="hint">
              {selection.mode === 'chat'
                ? 'Sent as one user message, rendered with the model’s chat template.'
                : 'Sent as plain text, continued by the model.'}{' '}
              Ctrl+Enter sends.
            </p>
            {fieldError('prompt')}
          </div>
          <div class="form-grid">{SAMPLING_FIELD_ORDER.map(numberField)}</div>
          <div class="actions playground-actions">
            <button
              type="submit"
              class="button button-primary"
              disabled={run.running || !resolved?.base}
            >
              {run.running ? 'Streaming…' : 'Send'}
            </button>
            <button
              type="button"
              class="button button-danger-outline"
              disabled={!run.running}
              onClick={run.stop}
            >
              Stop
            </button>
          </div>
        </fieldset>
      </form>

      {run.columns.length > 0 ? (
        <div class="playground-columns" id="playground-columns">
          {run.columns.map((column, index) => (
            <PlaygroundColumnCard key={`${index}-${column.model}`} column={column} index={index} />
          ))}
        </div>
      ) : null}
    </section>
  );
}
