import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { NodeProcess, TEST_LOG_DIR_ENV, isAlive, waitFor } from '../src';

let scratch: string;
const script = async (name: string, body: string) => {
  const file = path.join(scratch, name);
  await writeFile(file, body);
  return file;
};

beforeAll(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'lorafleet-testing-'));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

describe('NodeProcess', () => {
  it('keeps stdout and stderr, and mirrors them to the test log dir when it is set', async () => {
    const logDir = path.join(scratch, 'logs');
    const previous = process.env[TEST_LOG_DIR_ENV];
    process.env[TEST_LOG_DIR_ENV] = logDir;
    try {
      const file = await script('talk.js', "console.log('to stdout'); console.error('to stderr');");
      const child = new NodeProcess('talker', file, { EXTRA: '1' });
      expect(await child.waitForExit()).toBe(0);
      expect(child.text).toContain('to stdout');
      expect(child.text).toContain('to stderr');
      expect(await readdir(logDir)).toEqual([`talker-${child.pid}.log`]);
      const logged = await readFile(child.logFile!, 'utf8');
      expect(logged).toContain('to stdout');
      expect(logged).toContain('to stderr');
    } finally {
      if (previous === undefined) delete process.env[TEST_LOG_DIR_ENV];
      else process.env[TEST_LOG_DIR_ENV] = previous;
    }
  });

  it('writes no log file without the test log dir', async () => {
    const previous = process.env[TEST_LOG_DIR_ENV];
    delete process.env[TEST_LOG_DIR_ENV];
    try {
      const child = new NodeProcess('quiet', await script('quiet.js', "console.log('x');"), {});
      expect(await child.waitForExit()).toBe(0);
      expect(child.logFile).toBeNull();
      expect(child.text).toBe('x\n');
    } finally {
      if (previous !== undefined) process.env[TEST_LOG_DIR_ENV] = previous;
    }
  });

  it('stops with SIGTERM, and with SIGKILL once the grace is over', async () => {
    const polite = new NodeProcess(
      'polite',
      await script('polite.js', "setInterval(() => {}, 1000); console.log('up');"),
      {},
    );
    await waitFor(
      'polite to start',
      () => (polite.text.includes('up') ? true : undefined),
      10_000,
      20,
    );
    await polite.stop();
    expect(polite.hasExited).toBe(true);

    const stubborn = new NodeProcess(
      'stubborn',
      await script(
        'stubborn.js',
        "process.on('SIGTERM', () => {}); setInterval(() => {}, 1000); console.log('up');",
      ),
      {},
    );
    await waitFor(
      'stubborn to start',
      () => (stubborn.text.includes('up') ? true : undefined),
      10_000,
      20,
    );
    const pid = stubborn.pid!;
    const started = Date.now();
    await stubborn.stop(300);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(isAlive(pid)).toBe(false);
  });
});

describe('waitFor', () => {
  it('returns the first defined value', async () => {
    let calls = 0;
    const value = await waitFor(
      'the third call',
      () => (++calls === 3 ? 'ready' : undefined),
      5000,
      1,
    );
    expect(value).toBe('ready');
    expect(calls).toBe(3);
  });

  it('names what it waited for and the last error when time runs out', async () => {
    await expect(
      waitFor(
        'a server',
        () => {
          throw new Error('connection refused');
        },
        100,
        10,
      ),
    ).rejects.toThrow('timed out after 100 ms waiting for a server: connection refused');
  });
});

describe('isAlive', () => {
  it('is true for this process and false for an exited one', async () => {
    expect(isAlive(process.pid)).toBe(true);
    const child = new NodeProcess('brief', await script('brief.js', ''), {});
    await child.waitForExit();
    expect(isAlive(child.pid!)).toBe(false);
  });
});
