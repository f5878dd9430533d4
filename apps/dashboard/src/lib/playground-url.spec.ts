import type { ModelObject } from './api-types';
import { matchRoute } from './routes';
import {
  groupModels,
  parentOf,
  parsePlaygroundSearch,
  playgroundUrl,
  resolveSelection,
} from './playground-url';

const model = (id: string, extra: Partial<ModelObject> = {}): ModelObject => ({
  id,
  object: 'model',
  created: 1,
  owned_by: 'x',
  ...extra,
});

const GPT2 = 'tiny-random-gpt2';
const LLAMA = 'lorafleet-tiny-llama';
const ft = (base: string, suffix: string) => `ft:${base}:org-1:${suffix}:ftjob-${suffix}`;

const MODELS = groupModels([
  model(GPT2),
  model(LLAMA),
  model(ft(GPT2, 'a'), { parent: GPT2, created: 10 }),
  model(ft(GPT2, 'b'), { parent: GPT2, created: 30 }),
  model(ft(GPT2, 'c'), { parent: GPT2, created: 20 }),
  model(ft(GPT2, 'd'), { parent: GPT2, created: 5 }),
  model(ft(LLAMA, 'e'), { parent: LLAMA, created: 1 }),
]);

describe('playground URL state', () => {
  it('round-trips base, adapters and mode through the URL', () => {
    const selection = {
      base: GPT2,
      adapters: [ft(GPT2, 'a'), ft(GPT2, 'b')],
      mode: 'completion' as const,
    };
    const url = playgroundUrl(selection);
    expect(url).toBe(
      '/playground?base=tiny-random-gpt2&adapter=ft%3Atiny-random-gpt2%3Aorg-1%3Aa%3Aftjob-a&adapter=ft%3Atiny-random-gpt2%3Aorg-1%3Ab%3Aftjob-b&mode=completion',
    );
    const [path, search] = url.split('?');
    expect(matchRoute(path, `?${search}`)).toEqual({ page: 'playground', ...selection });
  });

  it('defaults to chat and no selection, and leaves defaults out of the URL', () => {
    expect(parsePlaygroundSearch('')).toEqual({ base: null, adapters: [], mode: 'chat' });
    expect(parsePlaygroundSearch('?mode=bogus&base=').mode).toBe('chat');
    expect(playgroundUrl()).toBe('/playground');
    expect(playgroundUrl({ base: GPT2, mode: 'chat' })).toBe('/playground?base=tiny-random-gpt2');
  });

  it('keeps at most three adapters, without repeats', () => {
    const search = ['a', 'a', 'b', 'c', 'd'].map((s) => `adapter=${ft(GPT2, s)}`).join('&');
    expect(parsePlaygroundSearch(`?${search}`).adapters).toEqual([
      ft(GPT2, 'a'),
      ft(GPT2, 'b'),
      ft(GPT2, 'c'),
    ]);
    expect(playgroundUrl({ adapters: ['1', '2', '3', '4'] }).match(/adapter=/g)).toHaveLength(3);
  });
});

describe('playground models', () => {
  it('groups adapters under their parent base, newest first', () => {
    expect(MODELS.bases.map((m) => m.id)).toEqual([LLAMA, GPT2]);
    expect(MODELS.adaptersByBase.get(GPT2)?.map((m) => m.id)).toEqual([
      ft(GPT2, 'b'),
      ft(GPT2, 'c'),
      ft(GPT2, 'a'),
      ft(GPT2, 'd'),
    ]);
    expect(MODELS.adaptersByBase.get(LLAMA)?.map((m) => m.id)).toEqual([ft(LLAMA, 'e')]);
  });

  it('reads the parent from the name when the API sends none', () => {
    expect(parentOf(model(ft(GPT2, 'x')))).toBe(GPT2);
    expect(parentOf(model(ft(GPT2, 'x'), { parent: LLAMA }))).toBe(LLAMA);
    expect(parentOf(model(GPT2))).toBeNull();
  });

  it('resolves a Try-it selection as asked', () => {
    expect(resolveSelection({ base: GPT2, adapters: [ft(GPT2, 'c')] }, MODELS)).toEqual({
      base: GPT2,
      adapters: [ft(GPT2, 'c')],
      problems: [],
    });
  });

  it('picks the first base when none is asked, or the parent of the adapter asked for', () => {
    expect(resolveSelection({ base: null, adapters: [] }, MODELS).base).toBe(LLAMA);
    expect(resolveSelection({ base: null, adapters: [ft(GPT2, 'a')] }, MODELS)).toEqual({
      base: GPT2,
      adapters: [ft(GPT2, 'a')],
      problems: [],
    });
  });

  it('drops what the tenant cannot use, saying why', () => {
    const resolved = resolveSelection(
      { base: GPT2, adapters: [ft(LLAMA, 'e'), 'ft:tiny-random-gpt2:other:z:ftjob-z'] },
      MODELS,
    );
    expect(resolved).toEqual({
      base: GPT2,
      adapters: [],
      problems: [
        `${ft(LLAMA, 'e')} is an adapter of ${LLAMA}, not of ${GPT2}.`,
        'ft:tiny-random-gpt2:other:z:ftjob-z is not one of your fine-tuned models.',
      ],
    });
    expect(resolveSelection({ base: 'gone', adapters: [] }, MODELS)).toEqual({
      base: LLAMA,
      adapters: [],
      problems: ['The base model gone is not installed.'],
    });
    expect(resolveSelection({ base: null, adapters: [] }, groupModels([]))).toEqual({
      base: null,
      adapters: [],
      problems: [],
    });
  });
});
