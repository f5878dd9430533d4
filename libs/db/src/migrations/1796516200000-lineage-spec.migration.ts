import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Lineage in the contracts `LineageSchema` shape (issue 15 item 2) on jobs and adapters: the
 * spec the adapter was trained with replaces the trainer's own hyperparameters, lora,
 * max_seq_length and seed copies, and the job id is recorded. No column changes, so the
 * generator had nothing to write; hand-written. Do not edit once committed.
 */
const LINEAGE_FROM_OLD = (l: string) => `jsonb_build_object(
    'lorafleet_version', COALESCE(${l}->'lorafleet_version', '"0.1.0"'),
    'base_model', COALESCE(${l}->'base_model', to_jsonb(j.model)),
    'base_model_hash', COALESCE(${l}->'base_model_hash', to_jsonb(j.base_model_hash), 'null'),
    'base_model_sha256', COALESCE(${l}->'base_model_sha256', 'null'),
    'training_file_sha256', ${l}->'training_file_sha256',
    'validation_file_sha256', COALESCE(${l}->'validation_file_sha256', 'null'),
    'config_sha256', ${l}->'config_sha256',
    'spec', j.spec,
    'backend', COALESCE(${l}->'backend', to_jsonb(j.backend), '"unknown"'),
    'tfjs_version', COALESCE(${l}->'tfjs_version', '"unknown"'),
    'resumed_from_step', COALESCE(${l}->'resumed_from_step', 'null'),
    'fine_tuning_job_id', to_jsonb(j.id)
  ) || CASE WHEN ${l} ? 'worker' THEN jsonb_build_object('worker', ${l}->'worker') ELSE '{}' END`;

const OLD_FROM_LINEAGE = (
  l: string,
) => `(${l} - 'spec' - 'fine_tuning_job_id') || jsonb_build_object(
    'seed', ${l}->'spec'->'seed',
    'hyperparameters', ${l}->'spec'->'hyperparameters',
    'lora', ${l}->'spec'->'lora',
    'max_seq_length', ${l}->'spec'->'training'->'max_seq_length'
  )`;

export class LineageSpec1796516200000 implements MigrationInterface {
  name = 'LineageSpec1796516200000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(
      `UPDATE "fine_tuning_jobs" j SET "lineage" = ${LINEAGE_FROM_OLD('j."lineage"')}
        WHERE j."lineage" IS NOT NULL AND NOT j."lineage" ? 'spec'`,
    );
    await queryRunner.query(
      `UPDATE "adapters" a SET "lineage" = ${LINEAGE_FROM_OLD('a."lineage"')}
         FROM "fine_tuning_jobs" j
        WHERE a."job_id" = j."id" AND a."lineage" IS NOT NULL AND NOT a."lineage" ? 'spec'`,
    );
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(
      `UPDATE "adapters" SET "lineage" = ${OLD_FROM_LINEAGE('"lineage"')}
        WHERE "lineage" ? 'spec'`,
    );
    await queryRunner.query(
      `UPDATE "fine_tuning_jobs" SET "lineage" = ${OLD_FROM_LINEAGE('"lineage"')}
        WHERE "lineage" ? 'spec'`,
    );
  }
}
