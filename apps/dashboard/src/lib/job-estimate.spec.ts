import type { FineTuningJobEstimate } from '@lorafleet/contracts';
import { estimateView } from './job-estimate';

const ESTIMATE: FineTuningJobEstimate = {
  object: 'fine_tuning.job.estimate',
  model: 'tiny-random-gpt2',
  training_file: 'file-1',
  method: 'supervised',
  hyperparameters: { n_epochs: 3, batch_size: 2, learning_rate_multiplier: 1 },
  lora: { r: 8, alpha: 16, dropout: 0, use_rslora: false },
  training: {
    learning_rate: 2e-4,
    max_seq_length: 32,
    lr_scheduler: 'linear',
    warmup_steps: 0,
    weight_decay: 0,
    gradient_accumulation_steps: 1,
    max_grad_norm: 1,
    gradient_checkpointing: false,
  },
  examples: 3,
  trained_tokens_per_epoch: 1234,
  trained_tokens: 3702,
  trained_tokens_exact: true,
  target_tokens_per_epoch: 400,
  target_tokens: 1200,
  steps_per_epoch: 2,
  total_steps: 6,
  epochs: 3,
  truncated_examples: 0,
  examples_without_targets: 0,
  estimated_peak_memory_mb: 1402,
  memory_parts_mb: {
    frozen_weights: 1,
    adapter_and_optimizer: 1,
    activations: 1,
    head: 1,
    runtime: 400,
  },
  backends: [
    {
      backend: 'wasm-blas',
      workers: 2,
      memory_limit_mb: 4000,
      fits_memory: true,
      tokens_per_second: 100,
      samples: 3,
      estimated_seconds: 200,
      reason: null,
    },
    {
      backend: 'webgpu',
      workers: 1,
      memory_limit_mb: null,
      fits_memory: null,
      tokens_per_second: null,
      samples: 0,
      estimated_seconds: null,
      reason: 'no tiny-random-gpt2 job has finished on webgpu yet, so its speed is unknown',
    },
  ],
  quota: {
    fits: true,
    rule: 'max_active_jobs_per_tenant',
    limit: 20,
    active_jobs: 1,
    message: null,
  },
};

describe('estimateView', () => {
  it('shows tokens, steps, memory and quota, and a time per backend or why there is none', () => {
    expect(estimateView(ESTIMATE)).toEqual({
      rows: [
        ['Trained tokens', '3,702 (1,234 per epoch, 400 of them trained on)'],
        ['Steps', '6 steps: 2 per epoch × 3 epochs'],
        ['Peak memory', '≈ 1,402 MiB'],
        ['Quota', 'fits (1 of 20 active jobs)'],
      ],
      backends: [
        { backend: 'wasm-blas', time: '≈ 3 min 20 s', memory: 'fits', note: '' },
        {
          backend: 'webgpu',
          time: 'unknown',
          memory: '',
          note: 'no tiny-random-gpt2 job has finished on webgpu yet, so its speed is unknown',
        },
      ],
      noBackends: null,
      quotaProblem: null,
    });
  });

  it('marks prorated tokens, one epoch, truncation, a full quota and an empty fleet', () => {
    const view = estimateView({
      ...ESTIMATE,
      trained_tokens_exact: false,
      trained_tokens: 1851,
      total_steps: 1,
      epochs: 0.5,
      truncated_examples: 2,
      backends: [],
      quota: {
        fits: false,
        rule: 'max_active_jobs_per_tenant',
        limit: 2,
        active_jobs: 2,
        message:
          'This organization already has 2 active fine-tuning jobs; wait for one to finish or cancel one',
      },
    });
    expect(view.rows).toEqual([
      ['Trained tokens', '≈ 1,851 (1,234 per epoch, 400 of them trained on)'],
      ['Steps', '1 step: 2 per epoch × 0.5 epochs'],
      ['Truncated', '2 of 3 examples are cut at 32 tokens'],
      ['Peak memory', '≈ 1,402 MiB'],
      ['Quota', 'full (2 of 2 active jobs)'],
    ]);
    expect(view.noBackends).toMatch(/No training worker is running/);
    expect(view.quotaProblem).toMatch(/already has 2 active fine-tuning jobs/);
    expect(estimateView({ ...ESTIMATE, epochs: 1 }).rows[1][1]).toBe(
      '6 steps: 2 per epoch × 1 epoch',
    );
  });

  it('counts a DPO estimate in pairs, its tokens over both sides of each pair', () => {
    const view = estimateView({ ...ESTIMATE, method: 'dpo', truncated_examples: 1 });
    expect(view.rows).toEqual([
      [
        'Trained tokens',
        '3,702 (1,234 per epoch over both sides of each pair, 400 of them trained on)',
      ],
      ['Steps', '6 steps: 2 per epoch × 3 epochs'],
      ['Truncated', '1 of 3 pairs have a side cut at 32 tokens'],
      ['Peak memory', '≈ 1,402 MiB'],
      ['Quota', 'fits (1 of 20 active jobs)'],
    ]);
  });
});
