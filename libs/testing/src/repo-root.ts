import path from 'node:path';

/** The monorepo root: built apps live at `apps/<name>/dist/main.js` under it. */
export const REPO_ROOT = path.resolve(__dirname, '../../..');
