/**
 * AdamW and global-norm clipping against PyTorch (`torch.optim.AdamW`,
 * `torch.nn.utils.clip_grad_norm_`; fixture from tools/reference/adamw_step.py), on the cpu
 * and wasm backends. Both run in float32, in a slightly different operation order, so values
 * agree to float32 rounding: the tolerance is 2e-6 absolute on parameters of size ~0.5.
 *
 * The end-to-end gpt2-tiny step also recomputes the gradient in tfjs (relative error ~1e-6
 * against the float64 reference). A first AdamW step moves each weight by lr·g/(|g| + ε),
 * at most lr, and is sensitive to that error where |g| ≈ ε, so that comparison allows 1% of
 * the learning rate (1e-5).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';

import {
  AdamW,
  DEFAULT_ADAMW,
  Trainer,
  clipByGlobalNorm,
  initBackend,
  loadCausalLM,
  loadPeftAdapter,
  squaredGlobalNorm,
  type BackendName,
  type CausalLM,
  type TokenizedSequence,
} from '../src';
import { FIXTURES, maxAbsDiff, readInputs } from './fixture.helpers';
import { testSpec } from './trainer.helpers';

interface Dumped {
  shape: number[];
  data: number[];
}
interface Reference {
  synthetic: {
    config: { betas: [number, number]; eps: number; weight_decay: number; max_grad_norm: number };
    params: Record<string, Dumped>;
    steps: Array<{
      lr: number;
      grads: Record<string, Dumped>;
      total_norm: number;
      params_after: Record<string, Dumped>;
    }>;
  };
  gpt2_tiny: {
    config: {
      lr: number;
      betas: [number, number];
      eps: number;
      weight_decay: number;
      max_grad_norm: number;
    };
    total_norm: number;
    params_after: Record<string, Dumped>;
  };
}

const reference = JSON.parse(
  readFileSync(join(FIXTURES, 'adamw-reference.json'), 'utf8'),
) as Reference;

const PARAM_TOLERANCE = 2e-6;

describe.each(['cpu', 'wasm'] as BackendName[])('AdamW vs torch.optim.AdamW on %s', (backend) => {
  beforeAll(async () => {
    await initBackend(backend);
  });

  it('five clipped steps with weight decay and varying lr match torch', async () => {
    const { config, params, steps } = reference.synthetic;
    const variables = new Map<string, tf.Variable>();
    for (const [name, p] of Object.entries(params)) {
      variables.set(name, tf.variable(tf.tensor(p.data, p.shape), true)); // [shape]
    }
    const optimizer = new AdamW(variables, {
      beta1: config.betas[0],
      beta2: config.betas[1],
      epsilon: config.eps,
      weightDecay: config.weight_decay,
    });
    try {
      for (const [index, step] of steps.entries()) {
        const grads = new Map<string, tf.Tensor>();
        for (const [name, g] of Object.entries(step.grads))
          grads.set(name, tf.tensor(g.data, g.shape));
        const squared = squaredGlobalNorm(grads);
        const norm = Math.sqrt((await squared.data())[0]);
        squared.dispose();
        expect(Math.abs(norm - step.total_norm) / step.total_norm).toBeLessThan(1e-6);
        clipByGlobalNorm(grads, config.max_grad_norm, norm);
        optimizer.step(grads, step.lr);
        for (const g of grads.values()) g.dispose();
        expect(optimizer.iteration).toBe(index + 1);
        for (const [name, expected] of Object.entries(step.params_after)) {
          const error = maxAbsDiff(variables.get(name)!.dataSync(), expected.data);
          expect(error).toBeLessThanOrEqual(PARAM_TOLERANCE);
        }
      }
    } finally {
      optimizer.dispose();
      for (const v of variables.values()) v.dispose();
    }
  });

  it('state round-trips through getState/setState bit-exactly', () => {
    const w = tf.variable(tf.tensor([0.5, -0.25, 1], [3]), true);
    const opt = new AdamW(new Map([['w', w]]), { weightDecay: 0.1 });
    const g = new Map<string, tf.Tensor>([['w', tf.tensor([0.1, -0.3, 0.7], [3])]]);
    opt.step(g, 0.01);
    const state = opt.getState();
    const copy = new AdamW(new Map([['w', w]]));
    copy.setState(state);
    expect(copy.getState()).toEqual(state);
    expect(copy.iteration).toBe(1);
    opt.dispose();
    copy.dispose();
    g.get('w')!.dispose();
    w.dispose();
  });

  describe('one trainer step on the part-1 gpt2-tiny LoRA fixture', () => {
    let model: CausalLM;
    beforeAll(async () => {
      model = await loadCausalLM(join(FIXTURES, 'gpt2-tiny'));
      await loadPeftAdapter(model, 'ref', join(FIXTURES, 'gpt2-tiny-adapter'));
    });
    afterAll(() => model.dispose());

    it('loss → gradient → clip → AdamW equals torch', async () => {
      const inputs = readInputs('gpt2-tiny');
      // Right-padded rows become their real prefix; the trainer pads again itself.
      const train: TokenizedSequence[] = inputs.input_ids.map((ids, b) => {
        const length = inputs.attention_mask[b].reduce((n, m) => n + m, 0);
        return { inputIds: ids.slice(0, length), lossMask: inputs.loss_mask[b].slice(0, length) };
      });
      const { config, total_norm, params_after } = reference.gpt2_tiny;
      // No spec field sets β1, β2 or ε: the trainer's are torch's defaults, as the reference's.
      expect([...config.betas, config.eps]).toEqual([
        DEFAULT_ADAMW.beta1,
        DEFAULT_ADAMW.beta2,
        DEFAULT_ADAMW.epsilon,
      ]);
      const trainer = new Trainer({
        model,
        train,
        padTokenId: 0,
        shuffle: false,
        spec: testSpec({
          hyperparameters: { n_epochs: 1, batch_size: 2 },
          training: {
            learning_rate: config.lr,
            lr_scheduler: 'constant',
            weight_decay: config.weight_decay,
            max_grad_norm: config.max_grad_norm,
          },
        }),
      });
      try {
        const metrics = await trainer.trainStep();
        expect(Math.abs(metrics.gradNorm - total_norm) / total_norm).toBeLessThan(1e-4);
        const r = model.loraConfig('ref').r;
        let checked = 0;
        let worst = 0;
        for (const [path, w] of model.adapterWeights('ref')) {
          const a = params_after[`base_model.model.${path}.lora_A.weight`]; // [r, in]
          const b = params_after[`base_model.model.${path}.lora_B.weight`]; // [out, r]
          // tfjs A is [in, r] and B [r, out]: compare against the transposes.
          const aT = tf.tidy(() => tf.transpose(tf.tensor2d(w.a, [w.inFeatures, r])).dataSync());
          const bT = tf.tidy(() => tf.transpose(tf.tensor2d(w.b, [r, w.outFeatures])).dataSync());
          worst = Math.max(worst, maxAbsDiff(aT, a.data), maxAbsDiff(bT, b.data));
          checked++;
        }
        expect(checked).toBe(model.resolveTargets(model.loraConfig('ref')).length);
        expect(worst).toBeLessThanOrEqual(0.01 * config.lr);
      } finally {
        trainer.dispose();
      }
    });
  });
});
