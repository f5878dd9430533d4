import { Controller, Get, Inject, UseGuards } from '@nestjs/common';
import { WORKER_GONE_AFTER_MS } from '@lorafleet/contracts';
import { JobsRepository, WorkersRepository, type AuthenticatedPrincipal } from '@lorafleet/db';
import type { Queue } from 'bullmq';
import { AdminGuard } from '../auth/admin.guard';
import { ApiKeyGuard } from '../auth/api-key.guard';
import { Principal } from '../auth/principal.decorator';
import { FINE_TUNE_QUEUE } from '../infra/tokens';

/** The GPU fleet (DESIGN §4 Fleet): workers with their heartbeat, and queue depth per state. */
@Controller('v1/workers')
@UseGuards(ApiKeyGuard, AdminGuard)
export class WorkersController {
  constructor(
    private readonly workers: WorkersRepository,
    private readonly jobs: JobsRepository,
    @Inject(FINE_TUNE_QUEUE) private readonly queue: Queue,
  ) {}

  /**
   * Fleet admins see every worker's job and the queue depth. Tenant admins see the workers,
   * but a job only when it is their tenant's, and no queue depth: both would show them the
   * other tenants' activity.
   */
  @Get()
  async list(@Principal() principal: AuthenticatedPrincipal) {
    const now = Date.now();
    const workers = await this.workers.list();
    const visibleJobs = new Set<string>();
    for (const w of workers) {
      if (
        w.currentJobId &&
        (principal.isFleetAdmin ||
          (await this.jobs.findForTenant(principal.tenantId, w.currentJobId)))
      ) {
        visibleJobs.add(w.currentJobId);
      }
    }
    let queue: Record<string, number> | null = null;
    if (principal.isFleetAdmin) {
      try {
        queue = await this.queue.getJobCounts(
          'waiting',
          'active',
          'delayed',
          'prioritized',
          'completed',
          'failed',
        );
      } catch {
        queue = null; // Redis down: the fleet view still answers from Postgres.
      }
    }
    return {
      object: 'list',
      data: workers.map((w) => ({
        id: w.id,
        object: 'worker',
        host: w.host,
        pid: w.pid,
        backend: w.backend,
        device: w.device,
        // A worker that missed its heartbeats is gone, whatever it last said about itself.
        status: now - w.lastHeartbeatAt.getTime() > WORKER_GONE_AFTER_MS ? 'gone' : w.status,
        current_job: w.currentJobId && visibleJobs.has(w.currentJobId) ? w.currentJobId : null,
        // The trainer's memory budget: jobs estimated above it are handed on or refused.
        memory_limit_mb: w.memoryLimitMb,
        versions: w.versions,
        started_at: Math.floor(w.startedAt.getTime() / 1000),
        last_heartbeat_at: Math.floor(w.lastHeartbeatAt.getTime() / 1000),
        heartbeat_age_seconds: Math.round((now - w.lastHeartbeatAt.getTime()) / 100) / 10,
      })),
      queue,
    };
  }
}
