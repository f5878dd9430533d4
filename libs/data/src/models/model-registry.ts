import { existsSync, readdirSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';

/** Thrown when a model name is malformed, escapes the models directory, or names no model. */
export class ModelNotFoundError extends Error {
  constructor(
    readonly modelName: string,
    reason: string,
  ) {
    super(`Model ${JSON.stringify(modelName)} ${reason}`);
    this.name = 'ModelNotFoundError';
  }
}

/** `name` or `org/name`; each segment starts with a letter or digit, so `.`/`..` cannot appear. */
const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(\/[A-Za-z0-9][A-Za-z0-9._-]{0,127})?$/;

export interface BaseModelEntry {
  /** The name clients use (`model` in a job). */
  name: string;
  /** Absolute, symlink-resolved directory holding config.json. */
  dir: string;
  createdAt: Date;
}

/**
 * Resolves a base model name to its directory under `modelsDir` (R22): rejects names with
 * traversal, absolute paths or NUL bytes, and symlinks whose target leaves the directory.
 */
export function resolveBaseModel(modelsDir: string, name: string): BaseModelEntry {
  if (!MODEL_NAME.test(name)) {
    throw new ModelNotFoundError(name, 'is not a valid model name (letters, digits, ., _, - and one /)');
  }
  const root = realpathSync(modelsDir);
  const candidate = path.join(root, name);
  if (!existsSync(path.join(candidate, 'config.json'))) {
    // Not naming modelsDir: this message reaches clients, and the path is the server's.
    throw new ModelNotFoundError(name, 'does not exist');
  }
  const real = realpathSync(candidate);
  if (real !== root && !real.startsWith(root + path.sep)) {
    throw new ModelNotFoundError(name, 'resolves outside the models directory');
  }
  return { name, dir: real, createdAt: statSync(path.join(real, 'config.json')).mtime };
}

/** Every model directory (`name/` or `org/name/` holding config.json) under `modelsDir`. */
export function listBaseModels(modelsDir: string): BaseModelEntry[] {
  if (!existsSync(modelsDir)) return [];
  const entries: BaseModelEntry[] = [];
  const visit = (prefix: string) => {
    for (const dirent of readdirSync(path.join(modelsDir, prefix), { withFileTypes: true })) {
      if (!dirent.isDirectory() && !dirent.isSymbolicLink()) continue;
      const name = prefix ? `${prefix}/${dirent.name}` : dirent.name;
      if (!MODEL_NAME.test(name)) continue;
      try {
        entries.push(resolveBaseModel(modelsDir, name));
      } catch {
        if (!prefix && statSync(path.join(modelsDir, name)).isDirectory()) visit(name);
      }
    }
  };
  visit('');
  return entries.sort((a, b) => a.name.localeCompare(b.name));
}
