import type { Lineage } from '@lorafleet/contracts';
import type { DataSource } from 'typeorm';
import { AdapterEntity, FileEntity, FineTuningJobEntity } from '../entities';
import type { JsonObject } from '../entities/json';
import { newId, sha256Hex } from '../ids';
import { lockLeasedJob } from './attempts.repository';
import { newFileRow } from './files.repository';
import { insertJobEvent } from './job-events.repository';
import { insertJobWebhookEvent } from './webhooks.repository';

export interface NewAdapter {
  adapterConfig: JsonObject;
  weights: Buffer;
  lineage: Lineage | null;
  fineTunedModel: string;
  trainedTokens: number;
  /** Final full-validation metrics. */
  finalMetrics?: Record<string, number>;
  /** Step metrics CSV, stored as a `fine-tune-results` file (OpenAI's `result_files`). */
  resultCsv?: string;
  /** Sample generations for a few validation prompts, recorded as an event. */
  samples?: { prompt: string; completion: string; reference: string }[];
  /**
   * Optimizer steps the run took. The job's progress is set to it (step = total_steps);
   * without it, to the last reported `total_steps`.
   */
  totalSteps?: number;
  /** What the attempt used, stored on the job (`usage`) and in a metrics event. */
  usage?: JobUsageRecord;
}

export interface JobUsageRecord {
  /** Peak resident memory of the trainer process, MiB; null where it cannot be read. */
  peakMemoryMb: number | null;
  tokensPerSecond: number | null;
}

/** Trained adapters: stored once per job by the attempt that finished it, read per tenant. */
export class AdaptersRepository {
  constructor(private readonly dataSource: DataSource) {}

  /**
   * Stores the adapter and marks the job succeeded in one transaction, fenced by the lease.
   * A stale attempt rolls back and stores nothing; the unique job_id index makes a second
   * adapter for one job impossible even under a fencing bug.
   */
  async completeWithAdapter(
    jobId: string,
    leaseToken: string,
    adapter: NewAdapter,
  ): Promise<AdapterEntity | null> {
    return this.dataSource.transaction(async (manager) => {
      const locked = await lockLeasedJob(manager, jobId, leaseToken);
      if (locked === null) return null;
      const adapterId = newId('adapter');
      await manager.insert(AdapterEntity, {
        id: adapterId,
        jobId,
        tenantId: locked.tenant_id,
        baseModel: locked.model,
        fineTunedModel: adapter.fineTunedModel,
        adapterConfig: adapter.adapterConfig,
        weights: adapter.weights,
        weightsSha256: sha256Hex(adapter.weights),
        lineage: adapter.lineage,
      });
      const resultFiles: string[] = [];
      if (adapter.resultCsv !== undefined) {
        const resultFile = newFileRow({
          tenantId: locked.tenant_id,
          filename: 'step_metrics.csv',
          purpose: 'fine-tune-results',
          content: Buffer.from(adapter.resultCsv),
          status: 'processed',
          statusDetails: null,
          kind: null,
          exampleCount: 0,
        });
        await manager.insert(FileEntity, resultFile);
        resultFiles.push(resultFile.id);
      }
      // A succeeded job shows its whole run: step = total_steps. The worker's progress writes
      // are fire-and-forget, so the last one may still be in flight (and will then be fenced
      // out by the lease and status below); completion does not depend on it.
      // The run's step count, else the last reported total (both columns from the old row).
      const finalStep =
        adapter.totalSteps ?? (() => 'COALESCE(progress_total_steps, progress_step)');
      await manager.update(
        FineTuningJobEntity,
        { id: jobId },
        {
          status: 'succeeded',
          adapterId,
          fineTunedModel: adapter.fineTunedModel,
          trainedTokens: adapter.trainedTokens,
          lineage: adapter.lineage,
          finalMetrics: adapter.finalMetrics ?? null,
          resultFiles,
          leaseToken: null,
          finishedAt: () => 'now()',
          progressTotalSteps: finalStep,
          progressStep: finalStep,
          ...(adapter.usage
            ? {
                peakMemoryMb: adapter.usage.peakMemoryMb,
                tokensPerSecond: adapter.usage.tokensPerSecond,
              }
            : {}),
        },
      );
      if (adapter.finalMetrics || adapter.samples?.length) {
        await insertJobEvent(manager, jobId, {
          type: 'metrics',
          message: 'Final validation metrics and sample generations',
          data: { final: true, ...adapter.finalMetrics, samples: adapter.samples ?? [] },
        });
      }
      if (adapter.usage) {
        const { peakMemoryMb, tokensPerSecond } = adapter.usage;
        await insertJobEvent(manager, jobId, {
          type: 'metrics',
          message: `Usage: peak memory ${peakMemoryMb === null ? 'unknown' : `${peakMemoryMb} MiB`}, ${tokensPerSecond === null ? '?' : Math.round(tokensPerSecond)} tokens/s`,
          data: { usage: true, peak_memory_mb: peakMemoryMb, tokens_per_second: tokensPerSecond },
        });
      }
      await insertJobEvent(manager, jobId, {
        type: 'status',
        message: `Fine-tuning job succeeded: ${adapter.fineTunedModel}`,
        data: { status: 'succeeded', from: 'running', adapter_id: adapterId },
      });
      // The webhook event commits with the status change (issue 20).
      await insertJobWebhookEvent(manager, jobId, 'succeeded');
      return manager.findOneByOrFail(AdapterEntity, { id: adapterId });
    });
  }

  findForTenant(tenantId: string, id: string): Promise<AdapterEntity | null> {
    return this.dataSource.getRepository(AdapterEntity).findOneBy({ tenantId, id });
  }

  /** The safetensors bytes are not selected by default; this reads them. */
  async getWeights(tenantId: string, id: string): Promise<Buffer | null> {
    const row = await this.dataSource
      .getRepository(AdapterEntity)
      .findOne({ select: { id: true, weights: true }, where: { tenantId, id } });
    return row ? row.weights : null;
  }

  findByFineTunedModel(tenantId: string, fineTunedModel: string): Promise<AdapterEntity | null> {
    return this.dataSource.getRepository(AdapterEntity).findOneBy({ tenantId, fineTunedModel });
  }

  listForTenant(tenantId: string): Promise<AdapterEntity[]> {
    return this.dataSource
      .getRepository(AdapterEntity)
      .find({ where: { tenantId }, order: { createdAt: 'DESC' } });
  }

  async deleteForTenant(tenantId: string, id: string): Promise<boolean> {
    const result = await this.dataSource.getRepository(AdapterEntity).delete({ tenantId, id });
    return (result.affected ?? 0) > 0;
  }

  countForJob(jobId: string): Promise<number> {
    return this.dataSource.getRepository(AdapterEntity).countBy({ jobId });
  }
}
