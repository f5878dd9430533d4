import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** Whether `user` can read `file` (every directory above it included), asked as that user. */
export function canRead(user: string, file: string): boolean {
  return spawnSync('runuser', ['-u', user, '--', 'test', '-r', file]).status === 0;
}

export interface ReadableCheckout {
  /** The checkout itself, or a copy `user` can read. */
  root: string;
  /** How `root` came about, for the test's log. */
  how: 'in place' | 'hard-linked copy' | 'copy';
  /** Removes the copy, if one was made. */
  remove(): void;
}

/**
 * Top-level entries a copy leaves out: git metadata, the Nx cache and the demo's own run and
 * service directories (`.lorafleet`, which may hold another user's Postgres data). Everything
 * else comes along: node_modules, the built `dist` folders, the models and the data set.
 */
const LEFT_OUT = new Set(['.git', '.nx', '.lorafleet']);

/**
 * A checkout that `user` can read, for running the demo as that user (root's tests run it as
 * `nobody`). A checkout in a private directory (cloned into /root/x, or into `mktemp -d`, mode
 * 0700) is unreadable to anyone else, and the demo died with "Cannot find module
 * …/tools/demo/demo.mjs" (issue 14, item 21). Then:
 * - a hard-linked copy in the temp directory, when it is on the same filesystem: seconds for
 *   node_modules' ~40k files, no extra space, and the files keep their modes (and owner), so
 *   `user` can only read them, as from a checkout in a public place;
 * - otherwise, or when the files themselves are private (a 077 umask), a full copy opened up
 *   with `chmod a+rX`, the checkout's own modes untouched.
 * `probe` is a file `user` must be able to read; it fails loudly if even the copy is unreadable.
 */
export function readableCheckout(
  root: string,
  user: string,
  probe = 'tools/demo/demo.mjs',
): ReadableCheckout {
  if (canRead(user, path.join(root, probe))) {
    return { root, how: 'in place', remove: () => undefined };
  }
  const parent = tmpdir();
  const sameFilesystem = statSync(parent).dev === statSync(root).dev;
  if (sameFilesystem) {
    const linked = copyCheckout(root, parent, ['-al']);
    if (canRead(user, path.join(linked, probe))) {
      return { root: linked, how: 'hard-linked copy', remove: () => removeCopy(linked) };
    }
    removeCopy(linked);
  }
  const copied = copyCheckout(root, parent, ['-a']);
  // Only the copy's modes change; its files are this test's own.
  const opened = spawnSync('chmod', ['-R', 'a+rX', copied], { encoding: 'utf8' });
  if (opened.status !== 0) throw new Error(`chmod -R a+rX ${copied}: ${opened.stderr}`);
  if (!canRead(user, path.join(copied, probe))) {
    removeCopy(copied);
    throw new Error(`${user} cannot read ${probe} even in a copy of the checkout under ${parent}`);
  }
  return { root: copied, how: 'copy', remove: () => removeCopy(copied) };
}

/** `cp <flags>` of every top-level entry but LEFT_OUT into a fresh world-readable directory. */
function copyCheckout(root: string, parent: string, flags: string[]): string {
  const copy = mkdtempSync(path.join(parent, 'lorafleet-checkout-'));
  chmodSync(copy, 0o755); // mkdtemp makes it 0700, which is the very problem
  const entries = readdirSync(root)
    .filter((name) => !LEFT_OUT.has(name))
    .map((name) => path.join(root, name));
  const result = spawnSync('cp', [...flags, ...entries, copy], { encoding: 'utf8' });
  if (result.status !== 0) {
    removeCopy(copy);
    throw new Error(`cp ${flags.join(' ')} of ${root} into ${copy} failed: ${result.stderr}`);
  }
  return copy;
}

function removeCopy(copy: string): void {
  rmSync(copy, { recursive: true, force: true });
}
