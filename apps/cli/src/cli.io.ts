/** Where a command writes. Tests pass a capturing implementation. */
export interface CliIo {
  out(text: string): void;
  err(text: string): void;
  /** Writes `text` to stdout as it is, no newline added (streamed tokens). */
  write?(text: string): void;
}

export const processIo: CliIo = {
  out: (text) => process.stdout.write(text.endsWith('\n') ? text : `${text}\n`),
  write: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text.endsWith('\n') ? text : `${text}\n`),
};

/** Bad invocation: the message is printed with the command's usage, exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** Exit codes: 0 success, 1 the command failed on valid input, 2 bad invocation. */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
