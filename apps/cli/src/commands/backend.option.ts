import {
  BACKEND_NAMES,
  REQUESTED_BACKENDS,
  type BackendName,
  type RequestedBackend,
} from '@lorafleet/lora-core';

import { UsageError } from '../cli.io';

export const BACKEND_HELP = `--backend <name>          tfjs backend: ${BACKEND_NAMES.join(' | ')} (default cpu)`;

export function parseBackend(value: string | undefined): BackendName {
  const name = value ?? 'cpu';
  if (!(BACKEND_NAMES as readonly string[]).includes(name)) {
    throw new UsageError(`--backend must be one of ${BACKEND_NAMES.join(', ')} (got "${name}")`);
  }
  return name as BackendName;
}

/** Help line for the training commands, which take every `LORAFLEET_BACKEND` value. */
export const REQUESTED_BACKEND_HELP = `${REQUESTED_BACKENDS.join(' | ')} (default $LORAFLEET_BACKEND or auto)`;

/** `--backend`, else `LORAFLEET_BACKEND`, else `auto`; an unknown name is a usage error. */
export function parseRequestedBackend(value: string | undefined): RequestedBackend {
  const name = value ?? process.env.LORAFLEET_BACKEND ?? 'auto';
  if (!(REQUESTED_BACKENDS as readonly string[]).includes(name)) {
    throw new UsageError(
      `--backend must be one of ${REQUESTED_BACKENDS.join(', ')} (got "${name}")`,
    );
  }
  return name as RequestedBackend;
}
