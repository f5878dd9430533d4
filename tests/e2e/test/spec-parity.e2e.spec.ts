/**
 * Issue 15: one FineTuneSpec from the request to the optimizer. A REST job trained by a real
 * worker and `lorafleet train`, given the same explicit inputs (seed, learning rate, a step
 * cap) and every other setting at its default, resolve the same spec and write
 * byte-identical adapters on the same backend.
 */
import { LineageSchema } from '@lorafleet/contracts';
import { NodeProcess, REPO_ROOT } from '@lorafleet/testing';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Fleet, TERMINAL } from './fleet-harness';

jest.setTimeout(240_000);

const ROWS = Array.from({ length: 12 }, (_, i) => ({
  prompt: `Count ${i}: `,
  completion: `${i} ${i + 1} ${i + 2}`,
}));
/** The explicit inputs, once as the REST body's and once as the CLI's flags. */
const SEED = 7;
const LEARNING_RATE = 5e-3;
const MAX_STEPS = 3;

describe('an API job and lorafleet train with the same inputs', () => {
  const fleet = new Fleet();
  let scratch: string;

  beforeAll(async () => {
    scratch = await mkdtemp(path.join(tmpdir(), 'lf-spec-parity-'));
    await fleet.start();
  });

  afterAll(async () => {
    await fleet.stop();
    await rm(scratch, { recursive: true, force: true });
  });

  it('resolve one spec and train byte-identical adapters on the cpu backend', async () => {
    const fileId = await fleet.uploadLines(ROWS);
    fleet.startWorker('parity-worker', { LORAFLEET_BACKEND: 'cpu' });
    const created = await fleet.request('POST', '/v1/fine_tuning/jobs', {
      model: 'tiny-random-gpt2',
      training_file: fileId,
      seed: SEED,
      training: { learning_rate: LEARNING_RATE, max_steps: MAX_STEPS },
    });
    expect(created.status).toBe(201);
    const jobId = created.body.id as string;
    const finished = await fleet.waitForJob(
      jobId,
      (job) => TERMINAL.includes(job.status),
      'the job to finish',
      180_000,
    );
    if (finished.status !== 'succeeded') {
      throw new Error(
        `job ${finished.status}: ${JSON.stringify(finished.error)}\n${fleet.workerOutput()}`,
      );
    }
    const weights = await fetch(
      `${fleet.baseUrl}/v1/adapters/${finished.adapter_id}/files/adapter_model.safetensors`,
      { headers: { authorization: `Bearer ${fleet.apiKey}` } },
    );
    expect(weights.status).toBe(200);
    const jobAdapter = Buffer.from(await weights.arrayBuffer());
    const [{ lineage: stored }] = await fleet.dataSource.query<{ lineage: unknown }[]>(
      'SELECT lineage FROM adapters WHERE id = $1',
      [finished.adapter_id],
    );
    const jobLineage = LineageSchema.parse(stored);

    const trainFile = path.join(scratch, 'train.jsonl');
    await writeFile(trainFile, ROWS.map((row) => JSON.stringify(row)).join('\n') + '\n');
    const out = path.join(scratch, 'adapter');
    const cli = new NodeProcess('cli', path.join(REPO_ROOT, 'apps/cli/dist/main.js'), {}, [
      'train',
      '--model',
      path.join(REPO_ROOT, 'models', 'tiny-random-gpt2'),
      '--train',
      trainFile,
      '--out',
      out,
      '--seed',
      String(SEED),
      '--learning-rate',
      String(LEARNING_RATE),
      '--max-steps',
      String(MAX_STEPS),
      '--backend',
      'cpu',
      '--quiet',
    ]);
    const code = await cli.waitForExit();
    expect({ code, output: code === 0 ? '' : cli.text }).toEqual({ code: 0, output: '' });
    const cliLineage = LineageSchema.parse(
      JSON.parse(await readFile(path.join(out, 'lorafleet.json'), 'utf8')),
    );

    // One spec: the job's echo, the worker's lineage and the CLI's lineage agree exactly,
    // with "auto", max_seq_length and the LoRA defaults resolved by the same function.
    expect(cliLineage.spec).toEqual(jobLineage.spec);
    expect(jobLineage.spec).toMatchObject({
      seed: SEED,
      training: { learning_rate: LEARNING_RATE, max_steps: MAX_STEPS, max_seq_length: 64 },
    });
    const job = (await fleet.request('GET', `/v1/fine_tuning/jobs/${jobId}`)).body;
    expect({
      hyperparameters: job.hyperparameters,
      lora: job.lora,
      training: job.training,
    }).toEqual({
      hyperparameters: jobLineage.spec.hyperparameters,
      lora: jobLineage.spec.lora,
      training: jobLineage.spec.training,
    });
    expect([cliLineage.backend, jobLineage.backend]).toEqual(['cpu', 'cpu']);
    expect(cliLineage.config_sha256).toBe(jobLineage.config_sha256);
    expect(cliLineage.base_model_hash).toBe(finished.base_model_hash);

    const cliAdapter = await readFile(path.join(out, 'adapter_model.safetensors'));
    expect(cliAdapter.equals(jobAdapter)).toBe(true);
  });
});
