/**
 * DPO end to end (issue 20, item 1): the official `openai` client uploads OpenAI's preference
 * JSONL and creates a job with `method: {type: "dpo", dpo: {hyperparameters: {beta}}}` against
 * the built api; a real worker process trains it (wasm backend, the shipped tiny GPT-2) to
 * `succeeded`. The job's metrics events and checkpoints carry the DPO metrics, and the
 * downloadable adapter is byte-identical to lora-core's `runFineTune` on the same spec in this
 * process (same backend), so it is the DPO-trained adapter and no other. The job estimate
 * (item 3) of the same body, asked before the create, foretells the finished job's steps and
 * trained tokens; it has no DPO speed to price the run with until the job records one.
 */
import type { FineTuneSpec, FineTuningJobEstimate } from '@lorafleet/contracts';
import { loadTokenizer } from '@lorafleet/data';
import { loadCausalLM, runFineTune, selectBackend } from '@lorafleet/lora-core';
import { REPO_ROOT, TINY_PREFERENCE_JSONL, TINY_PREFERENCE_PAIRS } from '@lorafleet/testing';
import OpenAI, { toFile } from 'openai';
import path from 'node:path';
import { Fleet } from './fleet-harness';

jest.setTimeout(180_000);

const BASE = 'tiny-random-gpt2';
const MODEL_DIR = path.join(REPO_ROOT, 'models', BASE);

const REWARD_FIELDS = [
  'train_rewards_chosen',
  'train_rewards_rejected',
  'train_rewards_margin',
  'train_rewards_accuracy',
];

describe('a DPO job through the openai client and a real worker', () => {
  const fleet = new Fleet();
  let client: OpenAI;

  beforeAll(async () => {
    await fleet.start();
    fleet.startWorker('dpo-1', {
      LORAFLEET_BACKEND: 'wasm',
      LORAFLEET_CHECKPOINT_EVERY_STEPS: '2',
    });
    client = new OpenAI({ apiKey: fleet.apiKey, baseURL: `${fleet.baseUrl}/v1`, maxRetries: 0 });
  });

  afterAll(async () => {
    await fleet.stop();
  });

  it('trains to succeeded with DPO metrics in events and checkpoints, and a downloadable adapter', async () => {
    const training = await client.files.create({
      file: await toFile(Buffer.from(TINY_PREFERENCE_JSONL), 'pairs.jsonl'),
      purpose: 'fine-tune',
    });
    const validation = await client.files.create({
      file: await toFile(Buffer.from(TINY_PREFERENCE_JSONL), 'pairs-valid.jsonl'),
      purpose: 'fine-tune',
    });
    expect(training).toMatchObject({ status: 'processed', kind: 'preference' });
    const body: OpenAI.FineTuning.JobCreateParams = {
      model: BASE,
      training_file: training.id,
      validation_file: validation.id,
      seed: 3,
      method: {
        type: 'dpo',
        dpo: {
          hyperparameters: { beta: 0.1, n_epochs: 3, batch_size: 2, learning_rate_multiplier: 50 },
        },
      },
      // lorafleet's extensions, which the client passes through as body fields.
      ...({
        lora: { r: 4, alpha: 8 },
        training: { max_seq_length: 48, eval_every_steps: 3 },
      } as object),
    };
    // The estimate (a lorafleet extension) through the client's generic post, before the job
    // exists: the worker is live, but no DPO run has measured its speed.
    await fleet.workerReady('dpo-1');
    const estimate = (request: object) =>
      client.post<FineTuningJobEstimate>('/fine_tuning/jobs/estimate', { body: request });
    const before = await estimate(body);
    expect(before).toMatchObject({
      method: 'dpo',
      examples: TINY_PREFERENCE_PAIRS.length,
      epochs: 3,
    });
    expect(before.backends).toEqual([
      expect.objectContaining({
        backend: 'wasm',
        estimated_seconds: null,
        reason: expect.stringContaining('no DPO job on tiny-random-gpt2 has finished on wasm yet'),
      }),
    ]);
    const created = await client.fineTuning.jobs.create(body);
    expect(created.method).toEqual({
      type: 'dpo',
      dpo: {
        hyperparameters: { beta: 0.1, n_epochs: 3, batch_size: 2, learning_rate_multiplier: 50 },
      },
    });

    const done = await fleet.waitForTerminal(created.id);
    if (done.status !== 'succeeded') {
      throw new Error(`job ${done.status}: ${JSON.stringify(done.error)}\n${fleet.workerOutput()}`);
    }
    const finished = await client.fineTuning.jobs.retrieve(created.id);
    expect(finished).toMatchObject({ status: 'succeeded', trained_tokens: expect.any(Number) });
    expect(finished.fine_tuned_model).toMatch(/^ft:tiny-random-gpt2:/);
    // The estimate foretold the run: the trainer's steps, and its tokens over both sides of
    // every pair (2 pairs a step, 2 steps an epoch, 3 epochs).
    expect(before).toMatchObject({
      total_steps: done.progress.total_steps,
      trained_tokens: finished.trained_tokens,
      trained_tokens_exact: true,
    });
    expect(before.total_steps).toBe(6);
    // The finished attempt recorded its DPO speed, so the same body now has a wall time on wasm.
    const samples = await fleet.dataSource.query<{ method: string; backend: string }[]>(
      'SELECT method, backend FROM worker_throughput WHERE job_id = $1',
      [created.id],
    );
    expect(samples).toEqual([{ method: 'dpo', backend: 'wasm' }]);
    const after = await estimate(body);
    expect(after.backends).toEqual([
      expect.objectContaining({
        backend: 'wasm',
        samples: 1,
        tokens_per_second: expect.any(Number),
        estimated_seconds: expect.any(Number),
        reason: null,
      }),
    ]);
    expect(after.backends[0].estimated_seconds).toBe(
      Math.ceil(after.trained_tokens / after.backends[0].tokens_per_second!),
    );

    // Metrics events: every step's DPO loss and rewards, no token accuracy (2 pairs a step,
    // 2 steps an epoch, 3 epochs).
    const events: OpenAI.FineTuning.FineTuningJobEvent[] = [];
    for await (const event of client.fineTuning.jobs.listEvents(created.id, { limit: 100 }))
      events.push(event);
    const metricsData = events
      .filter((e) => e.type === 'metrics')
      .map((e) => (e.data ?? {}) as Record<string, number | undefined>);
    const metrics = metricsData.filter((d) => d.train_loss !== undefined);
    expect(metrics.length).toBeGreaterThan(0);
    const lastStep = metrics.find((m) => m.step === 6);
    expect(lastStep).toBeDefined();
    for (const field of REWARD_FIELDS) expect(typeof lastStep![field]).toBe('number');
    expect(lastStep!.train_mean_token_accuracy).toBeUndefined();
    expect(lastStep!.train_rewards_margin).toBeCloseTo(
      lastStep!.train_rewards_chosen! - lastStep!.train_rewards_rejected!,
      5,
    );
    const validationEvents = metricsData.filter((d) => d.valid_loss !== undefined);
    expect(validationEvents.map((m) => m.step).sort()).toEqual([3, 6]);
    expect(typeof validationEvents[0].valid_rewards_accuracy).toBe('number');

    // Checkpoints carry the same metrics.
    const checkpoints = await client.fineTuning.jobs.checkpoints.list(created.id);
    expect(checkpoints.data.length).toBeGreaterThan(0);
    const checkpointMetrics = checkpoints.data[0].metrics as Record<string, number>;
    for (const field of REWARD_FIELDS) expect(typeof checkpointMetrics[field]).toBe('number');

    // The adapter downloads, and it is exactly what lora-core trains from the job's spec.
    const adapterId = done.adapter_id!;
    const download = await fetch(
      `${fleet.baseUrl}/v1/adapters/${adapterId}/files/adapter_model.safetensors`,
      { headers: { authorization: `Bearer ${fleet.apiKey}` } },
    );
    expect(download.status).toBe(200);
    const served = Buffer.from(await download.arrayBuffer());
    const [row] = await fleet.dataSource.query<{ spec: FineTuneSpec }[]>(
      'SELECT spec FROM fine_tuning_jobs WHERE id = $1',
      [created.id],
    );
    expect(row.spec.method).toEqual({ type: 'dpo', beta: 0.1 });
    await selectBackend('wasm');
    const model = await loadCausalLM(MODEL_DIR);
    const local = await runFineTune({
      model: { model, tokenizer: await loadTokenizer(MODEL_DIR), name: BASE },
      trainJsonl: TINY_PREFERENCE_JSONL,
      validationJsonl: TINY_PREFERENCE_JSONL,
      spec: row.spec,
      samples: false,
    }).finally(() => model.dispose());
    expect(served.equals(Buffer.from(local.adapter.adapterSafetensors))).toBe(true);
    // It learned the preferences: the final validation's chosen rewards beat the rejected.
    expect(local.validation!.dpo!.rewardsMargin).toBeGreaterThan(0);
  });
});
