/**
 * Issue 14, item 21: root's tests run the demo as `nobody`, who cannot read a checkout cloned
 * into a private directory (/root/x, `mktemp -d`). `readableCheckout` hands them a copy they
 * can read. These checks use a small fake checkout in a 0700 directory, so they are quick; the
 * real demo runs from it in demo-own-services.e2e.spec.ts.
 */
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { canRead, readableCheckout } from './readable-checkout';

const asRoot = process.getuid?.() === 0;
const USER = 'nobody';

/** A checkout in miniature: the demo script requires a workspace lib through node_modules. */
function fakeCheckout(root: string, fileMode = 0o644, dirMode = 0o755): void {
  const write = (file: string, text: string) => {
    mkdirSync(path.dirname(path.join(root, file)), { recursive: true, mode: dirMode });
    writeFileSync(path.join(root, file), text, { mode: fileMode });
  };
  write(
    'tools/demo/demo.mjs',
    `import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
console.log('demo sees', require('@lorafleet/x').ok, 'as', process.getuid());
`,
  );
  write('libs/x/index.js', "exports.ok = 'lib-x';\n");
  write('libs/x/package.json', '{"name":"@lorafleet/x","main":"index.js"}\n');
  mkdirSync(path.join(root, 'node_modules/@lorafleet'), { recursive: true, mode: dirMode });
  symlinkSync('../../libs/x', path.join(root, 'node_modules/@lorafleet/x'));
  write('.git/HEAD', 'ref: refs/heads/main\n');
  write('.lorafleet/demo/results.json', '{}\n');
  // mkdirSync's mode is masked by the umask; set the private modes for certain.
  for (const dir of ['tools', 'tools/demo', 'libs', 'libs/x', 'node_modules']) {
    chmodSync(path.join(root, dir), dirMode);
  }
}

/** Runs the fake demo as `nobody` from `root`; its output, or the error. */
function runAsNobody(root: string): { status: number | null; output: string } {
  const result = spawnSync(
    'runuser',
    ['-u', USER, '--', process.execPath, path.join(root, 'tools/demo/demo.mjs')],
    { cwd: root, encoding: 'utf8' },
  );
  return { status: result.status, output: result.stdout + result.stderr };
}

(asRoot ? describe : describe.skip)('readableCheckout (issue 14, item 21; as root)', () => {
  let privateDir: string;

  beforeEach(() => {
    privateDir = mkdtempSync(path.join(tmpdir(), 'lorafleet-private-')); // mode 0700
  });
  afterEach(() => rmSync(privateDir, { recursive: true, force: true }));

  it('nobody cannot run the demo from a checkout inside a 0700 directory (the bug)', () => {
    const repo = path.join(privateDir, 'lorafleet');
    fakeCheckout(repo);
    expect(statSync(privateDir).mode & 0o777).toBe(0o700);
    expect(canRead(USER, path.join(repo, 'tools/demo/demo.mjs'))).toBe(false);
    const run = runAsNobody(repo);
    expect(run.status).not.toBe(0);
  });

  it('gives nobody a hard-linked copy of a checkout in a private directory, and removes it', () => {
    const repo = path.join(privateDir, 'lorafleet');
    fakeCheckout(repo);
    const checkout = readableCheckout(repo, USER);
    try {
      expect(checkout.how).toBe('hard-linked copy');
      expect(checkout.root).not.toBe(repo);
      const run = runAsNobody(checkout.root);
      expect(run.output).toContain('demo sees lib-x as 65534');
      expect(run.status).toBe(0);
      // Git metadata and the demo's own data stay behind; the checkout is untouched.
      expect(existsSync(path.join(checkout.root, '.git'))).toBe(false);
      expect(existsSync(path.join(checkout.root, '.lorafleet'))).toBe(false);
      expect(statSync(privateDir).mode & 0o777).toBe(0o700);
      // A hard link: the same file, so nothing was copied and no mode changed.
      expect(statSync(path.join(checkout.root, 'tools/demo/demo.mjs')).ino).toBe(
        statSync(path.join(repo, 'tools/demo/demo.mjs')).ino,
      );
    } finally {
      checkout.remove();
    }
    expect(existsSync(checkout.root)).toBe(false);
    expect(existsSync(path.join(repo, 'tools/demo/demo.mjs'))).toBe(true);
  });

  it('copies and opens up a checkout whose files are private too (umask 077), leaving its modes alone', () => {
    fakeCheckout(privateDir, 0o600, 0o700); // the checkout is the mktemp -d directory itself
    const checkout = readableCheckout(privateDir, USER);
    try {
      expect(checkout.how).toBe('copy');
      const run = runAsNobody(checkout.root);
      expect(run.output).toContain('demo sees lib-x as 65534');
      expect(statSync(path.join(privateDir, 'tools/demo/demo.mjs')).mode & 0o777).toBe(0o600);
      expect(statSync(path.join(privateDir, 'tools')).mode & 0o777).toBe(0o700);
    } finally {
      checkout.remove();
    }
  });

  it('uses a checkout nobody can read in place', () => {
    chmodSync(privateDir, 0o755);
    fakeCheckout(privateDir);
    const checkout = readableCheckout(privateDir, USER);
    expect(checkout).toMatchObject({ root: privateDir, how: 'in place' });
    checkout.remove(); // a no-op
    expect(existsSync(path.join(privateDir, 'tools/demo/demo.mjs'))).toBe(true);
  });
});
