import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * DESIGN §6: an adapter applies only to the base whose weights it was trained on. When the
 * adapter directory carries lineage (`lorafleet.json` with `base_model_sha256`), the loaded
 * base must match unless the caller overrides. PEFT directories from elsewhere have no
 * lineage file and are accepted as they are.
 */
export async function checkAdapterLineage(
  adapterDir: string,
  baseSha256: string | undefined,
  allowMismatch: boolean,
): Promise<string | undefined> {
  const path = join(adapterDir, 'lorafleet.json');
  if (!existsSync(path)) return undefined;
  let lineage: unknown;
  try {
    lineage = JSON.parse(await readFile(path, 'utf8'));
  } catch (error) {
    throw new Error(`${path} is not valid JSON: ${(error as Error).message}`);
  }
  const expected = (lineage as { base_model_sha256?: unknown }).base_model_sha256;
  if (typeof expected !== 'string' || baseSha256 === undefined || expected === baseSha256)
    return undefined;
  const message = `adapter was trained on base weights sha256 ${expected}, but the model's weights hash to ${baseSha256}`;
  if (!allowMismatch) throw new Error(`${message}; pass --allow-base-mismatch to apply it anyway`);
  return `warning: ${message} (allowed by --allow-base-mismatch)`;
}
