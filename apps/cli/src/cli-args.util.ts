import { parseArgs, type ParseArgsConfig } from 'node:util';

import { UsageError } from './cli.io';

type Options = NonNullable<ParseArgsConfig['options']>;
type HelpOption = { help: { type: 'boolean'; short: 'h' } };
type StrictConfig<O extends Options> = {
  args: string[];
  options: O & HelpOption;
  allowPositionals: true;
  strict: true;
};

/** What `parseCommandArgs` returns: typed `values` per option, plus positionals. */
export type ParsedCommandArgs<O extends Options> = ReturnType<typeof parseArgs<StrictConfig<O>>>;

/**
 * `util.parseArgs` in strict mode, with its errors turned into `UsageError`s so every
 * command reports unknown flags and missing values the same way.
 */
export function parseCommandArgs<O extends Options>(
  args: string[],
  options: O,
): ParsedCommandArgs<O> {
  const config: StrictConfig<O> = {
    args,
    options: { ...options, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
    strict: true,
  };
  try {
    return parseArgs(config);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

export function requireString(value: string | boolean | undefined, flag: string): string {
  if (typeof value !== 'string' || value.length === 0) throw new UsageError(`${flag} is required`);
  return value;
}

export function parsePositiveInt(value: string, flag: string): number {
  if (!/^\d+$/.test(value) || Number(value) <= 0 || !Number.isSafeInteger(Number(value))) {
    throw new UsageError(`${flag} must be a positive integer (got "${value}")`);
  }
  return Number(value);
}

export function parsePositiveNumber(value: string, flag: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) {
    throw new UsageError(`${flag} must be a positive number (got "${value}")`);
  }
  return n;
}

/** `a,b,,c` → ['a', 'b', 'c']; empty lists are an error. */
export function parseList(value: string, flag: string): string[] {
  const items = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (items.length === 0) throw new UsageError(`${flag} must list at least one item`);
  return items;
}
