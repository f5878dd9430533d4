import { BACKEND_NAMES, type BackendName } from '@lorafleet/lora-core';

import { UsageError } from '../cli.io';

export const BACKEND_HELP = `--backend <name>          tfjs backend: ${BACKEND_NAMES.join(' | ')} (default cpu)`;

export function parseBackend(value: string | undefined): BackendName {
  const name = value ?? 'cpu';
  if (!(BACKEND_NAMES as readonly string[]).includes(name)) {
    throw new UsageError(`--backend must be one of ${BACKEND_NAMES.join(', ')} (got "${name}")`);
  }
  return name as BackendName;
}
