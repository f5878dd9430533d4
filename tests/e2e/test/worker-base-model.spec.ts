/**
 * The worker trains only on the base model the job was created against (DESIGN §6 lineage):
 * the api records the base model's content hash on the job, and the worker checks it before
 * training. A changed or missing base fails the job once, with a reason that names the model
 * and both hashes; an unchanged one trains and carries the hash into the adapter's lineage.
 */
import { hashBaseModel } from '@lorafleet/data';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Fleet } from './fleet-harness';
import { REPO_ROOT } from '@lorafleet/testing';

jest.setTimeout(180_000);

const MODEL_FILES = ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors'];

describe('base model hash check', () => {
  let models: string;
  let fleet: Fleet;
  let fileId: string;

  /** A private copy of the tiny model under `name`, so the test can change or remove it. */
  const copyModel = (name: string): string => {
    const dir = path.join(models, name);
    mkdirSync(dir);
    for (const file of MODEL_FILES) {
      copyFileSync(path.join(REPO_ROOT, 'models/tiny-random-gpt2', file), path.join(dir, file));
    }
    return dir;
  };

  beforeAll(async () => {
    models = mkdtempSync(path.join(tmpdir(), 'lf-models-hash-'));
    fleet = new Fleet({ modelsDir: models });
    await fleet.start();
    fileId = await fleet.uploadExamples(8);
  });

  afterAll(async () => {
    await fleet.stop();
    rmSync(models, { recursive: true, force: true });
  });

  it('fails a job whose base model changed or vanished after creation, once and clearly; trains an unchanged one with the hash in its lineage', async () => {
    const tamperedDir = copyModel('tampered');
    const vanishedDir = copyModel('vanished');
    const intactDir = copyModel('intact');
    const expected = (await hashBaseModel(tamperedDir)).sha256;

    // No worker yet: the jobs wait in the queue while the models change under them.
    const tampered = await fleet.createJob(fileId, 3, { model: 'tampered' });
    const vanished = await fleet.createJob(fileId, 3, { model: 'vanished' });
    const intact = await fleet.createJob(fileId, 3, { model: 'intact' });
    expect(tampered.base_model_hash).toBe(expected);
    expect(vanished.base_model_hash).toBe(expected); // same bytes, same hash
    expect(intact.base_model_hash).toBe((await hashBaseModel(intactDir)).sha256);

    // One flipped byte in the weights, same size: a different base model.
    const weights = path.join(tamperedDir, 'model.safetensors');
    const bytes = readFileSync(weights);
    bytes[bytes.length - 1] ^= 0xff;
    writeFileSync(weights, bytes);
    const found = (await hashBaseModel(tamperedDir)).sha256;
    expect(found).not.toBe(expected);
    rmSync(vanishedDir, { recursive: true });

    fleet.startWorker('w-hash', { LORAFLEET_MAX_ATTEMPTS: '3' });
    const [mismatch, missing, trained] = await Promise.all(
      [tampered, vanished, intact].map((job) => fleet.waitForTerminal(job.id)),
    );

    expect(mismatch.status).toBe('failed');
    expect(mismatch.error).toMatchObject({ code: 'base_model_mismatch' });
    expect(mismatch.error?.message).toContain(
      'base model "tampered" changed since the job was created',
    );
    expect(mismatch.error?.message).toContain(`expected sha256 ${expected}`);
    expect(mismatch.error?.message).toContain(`found ${found}`);
    expect(mismatch.error?.message).toContain('on worker w-hash');

    expect(missing.status).toBe('failed');
    expect(missing.error).toMatchObject({ code: 'base_model_missing' });
    expect(missing.error?.message).toMatch(/^base model "vanished" is missing on worker w-hash/);

    // Failed once: one attempt, no failure counted toward retries, no adapter.
    for (const job of [mismatch, missing]) {
      expect(await fleet.row(job.id)).toEqual({ attempt: 1, failures: 0, adapters: 0 });
      expect(await fleet.statusTrail(job.id)).toEqual([
        'validating_files',
        'queued',
        'running',
        'failed',
      ]);
    }

    expect(trained.status).toBe('succeeded');
    const [adapter] = await fleet.dataSource.query<{ lineage: Record<string, unknown> }[]>(
      'SELECT lineage FROM adapters WHERE job_id = $1',
      [intact.id],
    );
    expect(adapter.lineage).toMatchObject({
      base_model: 'intact',
      base_model_hash: intact.base_model_hash,
      base_model_sha256: (await hashBaseModel(intactDir)).files.find(
        (f) => f.name === 'model.safetensors',
      )?.sha256,
    });
  });

  it('refuses to create a job on an incomplete base model', async () => {
    const dir = path.join(models, 'no-weights');
    mkdirSync(dir);
    copyFileSync(
      path.join(REPO_ROOT, 'models/tiny-random-gpt2/config.json'),
      path.join(dir, 'config.json'),
    );
    const created = await fleet.request('POST', '/v1/fine_tuning/jobs', {
      model: 'no-weights',
      training_file: fileId,
    });
    expect(created.status).toBe(404);
    expect(created.body.error).toMatchObject({ code: 'model_not_found', param: 'model' });
    expect(created.body.error.message).toMatch(
      /"no-weights" is incomplete: .*has neither model.safetensors nor model.safetensors.index.json/,
    );
  });
});
