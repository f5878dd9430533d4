/**
 * A trainer child played from a script inside the test process, behind the same
 * `SpawnTrainerChild` interface as the forked one: `TrainerProcess` and the processor run
 * unchanged, only the process boundary is scripted. It answers the parent as trainer-child.ts
 * does: a `stop` gets a checkpoint, `stopped` and a clean exit; a kill ends it by SIGKILL.
 */
import { FineTuneSpecSchema, LORAFLEET_VERSION } from '@lorafleet/contracts';
import type { SpawnTrainerChild } from '../src/trainer/trainer-process';
import type { ChildToParent, ParentToChild, TrainerResult } from '../src/trainer/trainer-protocol';

export type ScriptStep =
  /** Sent to the parent. */
  | ChildToParent
  /** Nothing for this long. */
  | { pauseMs: number }
  /** The process ends: an exit code, or a signal, and what it left on stderr. */
  | { exit: number | null; signal?: NodeJS.Signals; stderr?: string }
  /** Says nothing more until killed (or asked to stop). */
  | { hang: true };

export interface ScriptedChildOptions {
  /** Leave stop requests unanswered, as a child stuck in a long step does. */
  ignoresStop?: boolean;
  /** Collects the kinds of the messages the parent sent, for assertions. */
  received?: ParentToChild['kind'][];
}

const STEP_GAP_MS = 5;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Plays `script` after the parent's `start`, one step every few milliseconds. A script that
 * runs out without an exit step exits 0, as the real child does after `result`.
 */
export function scriptedTrainerChild(
  script: readonly ScriptStep[],
  { ignoresStop = false, received = [] }: ScriptedChildOptions = {},
): SpawnTrainerChild {
  return (events) => {
    let exited = false;
    let stopping = false;
    const exit = (code: number | null, signal: NodeJS.Signals | null, stderr = '') => {
      if (exited) return;
      exited = true;
      events.exit(code, signal, stderr);
    };
    const say = (message: ChildToParent) => {
      if (!exited) events.message(message);
    };
    const play = async () => {
      for (const step of script) {
        await sleep(STEP_GAP_MS);
        if (exited || stopping) return;
        if ('kind' in step) say(step);
        else if ('pauseMs' in step) await sleep(step.pauseMs);
        else if ('exit' in step) return exit(step.exit, step.signal ?? null, step.stderr);
        else return; // hang
      }
      await sleep(STEP_GAP_MS);
      if (!stopping) exit(0, null);
    };
    const stop = async (reason: 'pause' | 'shutdown') => {
      stopping = true;
      await sleep(STEP_GAP_MS);
      say({ kind: 'checkpoint', checkpoint: stopCheckpoint() });
      say({ kind: 'stopped', reason });
      await sleep(STEP_GAP_MS);
      exit(0, null);
    };
    return {
      pid: undefined,
      send(message) {
        if (exited) return;
        received.push(message.kind);
        if (message.kind === 'start') void play();
        else if (message.kind === 'stop' && !ignoresStop && !stopping) void stop(message.reason);
      },
      kill() {
        setImmediate(() => exit(null, 'SIGKILL'));
      },
    };
  };
}

/** The checkpoint the scripted child writes when asked to stop. */
export function stopCheckpoint() {
  return { step: 2, epoch: 1, metrics: { train_loss: 0.5 }, blob: new Uint8Array([2, 2]) };
}

/** A resolved spec, as a job stores it: the schema's defaults for everything not named. */
export const TEST_SPEC = FineTuneSpecSchema.parse({
  seed: 42,
  hyperparameters: { n_epochs: 1, batch_size: 2, learning_rate_multiplier: 1 },
  lora: {},
  training: { learning_rate: 2e-4, max_seq_length: 64 },
});

/** A result as the real child reports it, with recognisable adapter bytes. */
export function trainerResult(): TrainerResult {
  return {
    adapterConfig: { r: 4, peft_type: 'LORA' },
    adapterSafetensors: new Uint8Array([7, 7, 7]),
    trainedTokens: 30,
    finalLoss: 0.25,
    steps: 4,
    backend: 'cpu',
    metrics: { final_train_loss: 0.25 },
    resultCsv: 'step,train_loss\n4,0.25\n',
    samples: [],
    lineage: {
      lorafleet_version: LORAFLEET_VERSION,
      base_model: 'tiny',
      base_model_hash: null,
      base_model_sha256: null,
      training_file_sha256: 'a'.repeat(64),
      validation_file_sha256: null,
      config_sha256: 'c'.repeat(64),
      spec: TEST_SPEC,
      backend: 'cpu',
      tfjs_version: '4.22.0',
      resumed_from_step: null,
      fine_tuning_job_id: 'job-1',
    },
    peakMemoryMb: 100,
    tokensPerSecond: 12,
  };
}
