import type { FineTuningJob } from '@lorafleet/contracts';
import { formatMetric } from '../../lib/format';
import { displayValue, loraScaling } from '../../lib/job-detail';
import { KeyValues, type KeyValue } from '../key-values';

/** The resolved hyperparameters and training options, the LoRA settings and the data files. */
export function JobSettingsCards({ job }: { job: FineTuningJob }) {
  const lr = job.training.learning_rate;
  const hyper: KeyValue[] = [
    ['Epochs', displayValue(job.hyperparameters.n_epochs)],
    ['Batch size', displayValue(job.hyperparameters.batch_size)],
    ['Learning rate multiplier', displayValue(job.hyperparameters.learning_rate_multiplier)],
    ['Learning rate', lr === undefined ? 'multiplier × base rate' : displayValue(lr)],
    ['Max steps', displayValue(job.training.max_steps)],
    ['Max sequence length', displayValue(job.training.max_seq_length)],
    ['LR scheduler', displayValue(job.training.lr_scheduler)],
    ['Warmup steps', displayValue(job.training.warmup_steps)],
    ['Weight decay', displayValue(job.training.weight_decay)],
    ['Gradient accumulation', displayValue(job.training.gradient_accumulation_steps)],
    ['Gradient checkpointing', job.training.gradient_checkpointing ? 'on' : 'off'],
    ['Eval every', job.training.eval_every_steps ? `${job.training.eval_every_steps} steps` : null],
    ['Seed', String(job.seed)],
  ];
  const lora: KeyValue[] = [
    ['Rank (r)', displayValue(job.lora.r)],
    ['Alpha', displayValue(job.lora.alpha)],
    ['Scaling', formatMetric(loraScaling(job.lora))],
    ['Dropout', displayValue(job.lora.dropout)],
    [
      'Target modules',
      job.lora.target_modules === undefined
        ? 'architecture default'
        : displayValue(job.lora.target_modules),
    ],
    ['rsLoRA', displayValue(job.lora.use_rslora)],
  ];
  const files: KeyValue[] = [
    ['Training file', <span class="mono">{job.training_file}</span>],
    [
      'Validation file',
      job.validation_file ? <span class="mono">{job.validation_file}</span> : null,
    ],
    [
      'Metadata',
      job.metadata && Object.keys(job.metadata).length ? displayValue(job.metadata) : null,
    ],
  ];
  return (
    <div class="grid-2">
      <div class="card">
        <h2>Hyperparameters</h2>
        <KeyValues items={hyper} id="job-hyperparameters" />
      </div>
      <div class="card">
        <h2>LoRA</h2>
        <KeyValues items={lora} id="job-lora" />
        <h3>Data</h3>
        <KeyValues items={files} />
      </div>
    </div>
  );
}
