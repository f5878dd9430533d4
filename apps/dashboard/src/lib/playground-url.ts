import type { ModelObject } from './api-types';

/**
 * The playground's shareable state in its URL (`/playground?base=…&adapter=…&adapter=…&mode=…`)
 * and the model lists it picks from. A job page's "Try it" link is such a URL.
 */

/** Columns beside the base model: the "up to three of your adapters". */
export const MAX_PLAYGROUND_ADAPTERS = 3;

export type PlaygroundMode = 'chat' | 'completion';

export interface PlaygroundSelection {
  /** A base model name; null lets the page pick the first one installed. */
  base: string | null;
  /** `ft:` model names, in column order, without repeats. */
  adapters: string[];
  mode: PlaygroundMode;
}

export function parsePlaygroundSearch(search: string): PlaygroundSelection {
  const params = new URLSearchParams(search);
  const adapters: string[] = [];
  for (const name of params.getAll('adapter')) {
    if (name && !adapters.includes(name) && adapters.length < MAX_PLAYGROUND_ADAPTERS)
      adapters.push(name);
  }
  return {
    base: params.get('base') || null,
    adapters,
    mode: params.get('mode') === 'completion' ? 'completion' : 'chat',
  };
}

export function playgroundUrl(selection: Partial<PlaygroundSelection> = {}): string {
  const params = new URLSearchParams();
  if (selection.base) params.set('base', selection.base);
  for (const adapter of (selection.adapters ?? []).slice(0, MAX_PLAYGROUND_ADAPTERS))
    params.append('adapter', adapter);
  if (selection.mode === 'completion') params.set('mode', 'completion');
  const text = params.toString();
  return text ? `/playground?${text}` : '/playground';
}

const isFineTuned = (model: ModelObject) => model.id.startsWith('ft:');

/**
 * The base an `ft:` model applies to: its `parent` (issue 19), else the name's second part
 * (`ft:<base>:<org>:<suffix>:<job>`) for an API that does not send `parent`.
 */
export function parentOf(model: ModelObject): string | null {
  if (!isFineTuned(model)) return null;
  return model.parent ?? model.id.split(':')[1] ?? null;
}

export interface PlaygroundModels {
  bases: ModelObject[];
  /** Fine-tuned models by the base they apply to, newest first. */
  adaptersByBase: Map<string, ModelObject[]>;
}

/** `GET /v1/models` → base models and, per base, the tenant's adapters for it. */
export function groupModels(models: readonly ModelObject[]): PlaygroundModels {
  const bases = models.filter((m) => !isFineTuned(m)).sort((a, b) => a.id.localeCompare(b.id));
  const adaptersByBase = new Map<string, ModelObject[]>();
  for (const model of models) {
    const parent = parentOf(model);
    if (parent === null) continue;
    const list = adaptersByBase.get(parent) ?? [];
    list.push(model);
    adaptersByBase.set(parent, list);
  }
  for (const list of adaptersByBase.values()) list.sort((a, b) => b.created - a.created);
  return { bases, adaptersByBase };
}

export interface ResolvedSelection {
  base: string | null;
  adapters: string[];
  /** Why part of the requested selection was dropped, for the page to say so. */
  problems: string[];
}

/**
 * Checks a requested selection (from the URL) against the models the tenant can use: an
 * unknown base falls back to the first installed one, and an adapter that is not the tenant's,
 * or is for another base, is dropped with a reason. Without a base, an adapter's parent
 * chooses it.
 */
export function resolveSelection(
  requested: Pick<PlaygroundSelection, 'base' | 'adapters'>,
  models: PlaygroundModels,
): ResolvedSelection {
  const problems: string[] = [];
  const baseNames = models.bases.map((m) => m.id);
  let base = requested.base;
  if (base === null && requested.adapters.length > 0) {
    for (const [parent, list] of models.adaptersByBase) {
      if (list.some((m) => m.id === requested.adapters[0])) base = parent;
    }
  }
  if (base !== null && !baseNames.includes(base)) {
    problems.push(`The base model ${base} is not installed.`);
    base = null;
  }
  base ??= baseNames[0] ?? null;
  const available = base === null ? [] : (models.adaptersByBase.get(base) ?? []);
  const adapters: string[] = [];
  for (const name of requested.adapters) {
    if (available.some((m) => m.id === name)) {
      adapters.push(name);
      continue;
    }
    const parent = [...models.adaptersByBase].find(([, list]) =>
      list.some((m) => m.id === name),
    )?.[0];
    problems.push(
      parent
        ? `${name} is an adapter of ${parent}, not of ${base ?? 'the chosen base'}.`
        : `${name} is not one of your fine-tuned models.`,
    );
  }
  return { base, adapters, problems };
}
