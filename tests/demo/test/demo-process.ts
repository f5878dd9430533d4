import { spawn } from 'node:child_process';
import path from 'node:path';

export const REPO_ROOT = path.resolve(__dirname, '../../..');
export const DEMO_SCRIPT = path.join(REPO_ROOT, 'tools/demo/demo.mjs');

/**
 * Runs `command args` (by default `node tools/demo/demo.mjs`) from `cwd` (the repository root
 * unless a test runs the demo from a copy) and returns its combined output; a non-zero exit
 * throws with that output, so a failing demo shows why.
 */
export async function runDemo(
  env: NodeJS.ProcessEnv,
  command: string = process.execPath,
  args: string[] = [DEMO_SCRIPT],
  cwd: string = REPO_ROOT,
): Promise<string> {
  const output: string[] = [];
  const code = await new Promise<number | null>((resolve, reject) => {
    const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (c: Buffer) => output.push(c.toString()));
    child.stderr.on('data', (c: Buffer) => output.push(c.toString()));
    child.on('error', reject);
    child.on('exit', resolve);
  });
  const text = output.join('');
  if (code !== 0) throw new Error(`demo exited ${code}:\n${text}`);
  return text;
}
