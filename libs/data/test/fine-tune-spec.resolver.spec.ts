/**
 * resolveFineTuneSpec: the one place a run's configuration is decided (issue 15 item 1), for
 * the API's jobs and `lorafleet train` alike.
 */
import { DEFAULT_BASE_LEARNING_RATE, FineTuneSpecSchema } from '@lorafleet/contracts';
import { ZodError } from 'zod';
import { FineTuneSpecError, defaultMaxSeqLength, resolveFineTuneSpec } from '../src';

const CONTEXT = { model: 'tiny', contextLength: 64, trainingExamples: 12 };

describe('resolveFineTuneSpec', () => {
  it('resolves "auto" and every default into a spec the schema accepts as it is', () => {
    const spec = resolveFineTuneSpec({ seed: 3 }, CONTEXT);
    expect(spec).toEqual({
      seed: 3,
      // OpenAI's heuristic: 12 examples × 3 epochs < 100 passes, so floor(100 / 12) epochs.
      hyperparameters: { n_epochs: 8, batch_size: 1, learning_rate_multiplier: 1 },
      // PEFT's LoraConfig defaults, except alpha (see libs/contracts/src/lora.ts).
      lora: { r: 8, alpha: 16, dropout: 0, use_rslora: false },
      training: {
        learning_rate: DEFAULT_BASE_LEARNING_RATE,
        max_seq_length: defaultMaxSeqLength(64),
        lr_scheduler: 'linear',
        warmup_steps: 0,
        weight_decay: 0,
        gradient_accumulation_steps: 1,
        max_grad_norm: 1,
        gradient_checkpointing: false,
      },
    });
    expect(FineTuneSpecSchema.parse(spec)).toEqual(spec);
  });

  it('takes learning_rate from the multiplier unless it is given, and caps max_seq_length at 1024', () => {
    const context = { ...CONTEXT, contextLength: 4096 };
    const scaled = resolveFineTuneSpec(
      { seed: 1, hyperparameters: { learning_rate_multiplier: 2 } },
      context,
    );
    expect(scaled.training.learning_rate).toBe(2 * DEFAULT_BASE_LEARNING_RATE);
    expect(scaled.training.max_seq_length).toBe(1024);
    const explicit = resolveFineTuneSpec(
      {
        seed: 1,
        hyperparameters: { learning_rate_multiplier: 2 },
        training: { learning_rate: 1e-3 },
      },
      context,
    );
    expect(explicit.training.learning_rate).toBe(1e-3);
  });

  it("draws a seed in OpenAI's range when none is given", () => {
    const { seed } = resolveFineTuneSpec({}, CONTEXT);
    expect(Number.isInteger(seed) && seed >= 0 && seed <= 2_147_483_647).toBe(true);
  });

  it('refuses a max_seq_length beyond the context and bad values, naming the request field', () => {
    let beyond: unknown;
    try {
      resolveFineTuneSpec({ seed: 1, training: { max_seq_length: 65 } }, CONTEXT);
    } catch (error) {
      beyond = error;
    }
    expect(beyond).toBeInstanceOf(FineTuneSpecError);
    expect(beyond).toMatchObject({
      param: 'training.max_seq_length',
      message: 'training.max_seq_length 65 exceeds the context length of tiny (64)',
    });
    let bad: unknown;
    try {
      resolveFineTuneSpec({ seed: 1, training: { learning_rate: 2 } }, CONTEXT);
    } catch (error) {
      bad = error;
    }
    expect(bad).toBeInstanceOf(ZodError);
    expect((bad as ZodError).issues[0].path).toEqual(['training', 'learning_rate']);
  });
});
