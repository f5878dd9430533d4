/**
 * The FineTuneSpec and LineageSpec migrations convert rows both ways (issue 15 items 1, 2
 * and 4): a job stored with separate seed, hyperparameters, lora, training and learning_rate
 * columns gets one `spec` a worker can train from, old lineage becomes `LineageSchema`'s, and
 * the down migrations give the columns back.
 */
import { FineTuneSpecSchema, LineageSchema } from '@lorafleet/contracts';
import { DataSource, type MigrationInterface } from 'typeorm';
import { createScratchDatabase, type ScratchDatabase } from '@lorafleet/testing';
import { TenantsRepository, dataSourceOptions, runMigrations } from '../src';
import { ALL_MIGRATIONS } from '../src/migrations';

const OLD_ROW = {
  seed: 7,
  hyperparameters: { n_epochs: 2, batch_size: 1, learning_rate_multiplier: 0.5 },
  lora: { r: 4, alpha: 8, dropout: 0, use_rslora: false, target_modules: ['c_attn'] },
  // As the API stored it before gradient_checkpointing and max_grad_norm existed.
  training: {
    max_seq_length: 32,
    lr_scheduler: 'cosine',
    warmup_steps: 1,
    weight_decay: 0,
    gradient_accumulation_steps: 2,
    max_steps: 3,
  },
  learningRate: 1e-4,
};

const SHA = (c: string) => c.repeat(64);
/** The lineage the worker wrote before LineageSchema (its trainer's camelCase copies). */
/** What the migration keeps as it was. */
const KEPT = {
  base_model: 'tiny',
  base_model_hash: SHA('a'),
  base_model_sha256: SHA('b'),
  training_file_sha256: SHA('c'),
  validation_file_sha256: null,
  config_sha256: SHA('d'),
};
const OLD_LINEAGE = {
  ...KEPT,
  hyperparameters: { epochs: 2, batchSize: 1, learningRate: 1e-4 },
  lora: { r: 4, alpha: 8, dropout: 0, targetModules: ['c_attn'], useRslora: false },
  max_seq_length: 32,
  tfjs_version: '4.22.0',
  lorafleet_version: '0.1.0',
  resumed_from_step: null,
  backend: 'wasm-blas',
  seed: 7,
  worker: 'worker-1',
};
const MIGRATIONS = [
  'FineTuneSpec1796515902332',
  'LineageSpec1796516200000',
  'FileKind1796520296176',
];

describe('the FineTuneSpec migration', () => {
  let scratch: ScratchDatabase;
  let ds: DataSource;

  beforeAll(async () => {
    scratch = await createScratchDatabase('lorafleet_spec_migration');
    // The undo counts below address the migrations up to FileKind; later ones (webhooks, …)
    // have suites of their own, so this data source stops there.
    const all = ALL_MIGRATIONS as unknown as (new () => MigrationInterface)[];
    const last = all.findIndex((m) => m.name === 'FileKind1796520296176');
    ds = new DataSource({
      ...dataSourceOptions({ url: scratch.url }),
      migrations: all.slice(0, last + 1),
    });
    await ds.initialize();
    await runMigrations(ds);
  });

  afterAll(async () => {
    await ds.destroy();
    await scratch.drop();
  });

  it('folds the old columns into one spec, lineage into LineageSchema, splits the requested backend, and goes back', async () => {
    const tenantId = (await new TenantsRepository(ds).createTenant('migrated')).id;
    for (let i = 0; i < MIGRATIONS.length; i++) await ds.undoLastMigration({ transaction: 'each' });
    for (const [id, backend] of [
      ['job-old-queued', 'auto'],
      ['job-old-done', 'wasm-blas'],
    ]) {
      await ds.query(
        `INSERT INTO fine_tuning_jobs (id, tenant_id, model, status, training_file_id, seed,
           hyperparameters, lora, training, learning_rate, backend)
         VALUES ($1, $2, 'tiny', 'queued', 'file-1', $3, $4, $5, $6, $7, $8)`,
        [
          id,
          tenantId,
          OLD_ROW.seed,
          OLD_ROW.hyperparameters,
          OLD_ROW.lora,
          OLD_ROW.training,
          OLD_ROW.learningRate,
          backend,
        ],
      );
    }
    await ds.query('UPDATE fine_tuning_jobs SET lineage = $1 WHERE id = $2', [
      OLD_LINEAGE,
      'job-old-done',
    ]);
    await ds.query(
      `INSERT INTO adapters (id, job_id, tenant_id, base_model, fine_tuned_model, adapter_config,
         weights, weights_sha256, lineage)
       VALUES ('adapter-old', 'job-old-done', $1, 'tiny', 'ft:tiny', '{}', '\\x00', $2, $3)`,
      [tenantId, SHA('e'), OLD_LINEAGE],
    );

    expect(await runMigrations(ds)).toEqual(MIGRATIONS);
    const rows = await ds.query<
      { id: string; spec: unknown; requested_backend: string | null; backend: string | null }[]
    >('SELECT id, spec, requested_backend, backend FROM fine_tuning_jobs ORDER BY id');
    for (const row of rows) {
      expect(FineTuneSpecSchema.parse(row.spec)).toEqual({
        seed: 7,
        // Stored without a method, as every spec before DPO: the schema reads it as supervised.
        method: { type: 'supervised' },
        hyperparameters: OLD_ROW.hyperparameters,
        lora: OLD_ROW.lora,
        training: {
          ...OLD_ROW.training,
          learning_rate: 1e-4,
          max_grad_norm: 1,
          gradient_checkpointing: false,
        },
      });
    }
    expect(rows.map((r) => [r.id, r.requested_backend, r.backend])).toEqual([
      ['job-old-done', null, 'wasm-blas'],
      ['job-old-queued', 'auto', null],
    ]);
    const lineages = await ds.query<{ lineage: unknown }[]>(
      `SELECT lineage FROM fine_tuning_jobs WHERE id = 'job-old-done'
        UNION ALL SELECT lineage FROM adapters WHERE id = 'adapter-old'`,
    );
    expect(lineages).toHaveLength(2);
    for (const { lineage } of lineages) {
      expect(LineageSchema.parse(lineage)).toEqual({
        lorafleet_version: '0.1.0',
        ...KEPT,
        spec: FineTuneSpecSchema.parse(rows[0].spec),
        backend: 'wasm-blas',
        tfjs_version: '4.22.0',
        resumed_from_step: null,
        fine_tuning_job_id: 'job-old-done',
        worker: 'worker-1',
      });
    }

    await ds.undoLastMigration({ transaction: 'each' }); // FileKind
    await ds.undoLastMigration({ transaction: 'each' });
    const [oldLineage] = await ds.query<{ lineage: Record<string, unknown> }[]>(
      "SELECT lineage FROM adapters WHERE id = 'adapter-old'",
    );
    expect(oldLineage.lineage).toMatchObject({
      seed: 7,
      max_seq_length: 32,
      lora: OLD_ROW.lora,
      training_file_sha256: SHA('c'),
    });
    await ds.undoLastMigration({ transaction: 'each' });
    const restored = await ds.query<Record<string, unknown>[]>(
      `SELECT id, seed, hyperparameters, lora, training, learning_rate, backend
         FROM fine_tuning_jobs ORDER BY id`,
    );
    expect(restored.map((r) => [r.id, r.backend])).toEqual([
      ['job-old-done', 'wasm-blas'],
      ['job-old-queued', 'auto'],
    ]);
    for (const row of restored) {
      expect(row).toMatchObject({
        seed: 7,
        hyperparameters: OLD_ROW.hyperparameters,
        lora: OLD_ROW.lora,
        training: expect.objectContaining(OLD_ROW.training) as unknown,
        learning_rate: 1e-4,
      });
    }
    expect(await runMigrations(ds)).toEqual(MIGRATIONS);
  });

  it('adds files.kind, null for the files stored before it, and drops it going back', async () => {
    const tenantId = (await new TenantsRepository(ds).createTenant('kinds')).id;
    await ds.undoLastMigration({ transaction: 'each' });
    await ds.query(
      `INSERT INTO files (id, tenant_id, filename, purpose, bytes, sha256, content, status)
       VALUES ('file-old', $1, 'old.jsonl', 'fine-tune', 1, $2, '\\x0a', 'processed')`,
      [tenantId, SHA('f')],
    );
    expect(await runMigrations(ds)).toEqual(['FileKind1796520296176']);
    expect(await ds.query("SELECT kind FROM files WHERE id = 'file-old'")).toEqual([
      { kind: null },
    ]);
    await ds.query("UPDATE files SET kind = 'preference' WHERE id = 'file-old'");
    await ds.undoLastMigration({ transaction: 'each' });
    const columns = await ds.query<{ column_name: string }[]>(
      "SELECT column_name FROM information_schema.columns WHERE table_name = 'files'",
    );
    expect(columns.map((c) => c.column_name)).not.toContain('kind');
    expect(await ds.query("SELECT id, status FROM files WHERE id = 'file-old'")).toEqual([
      { id: 'file-old', status: 'processed' },
    ]);
    expect(await runMigrations(ds)).toEqual(['FileKind1796520296176']);
  });
});
