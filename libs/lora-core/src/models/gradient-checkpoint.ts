/**
 * Gradient checkpointing (Chen et al. 2016, https://arxiv.org/abs/1604.06174): a block keeps
 * only its input for backward and recomputes its activations when the gradient reaches it,
 * so a step holds one block's activations plus the residual stream, for about one extra
 * forward pass of time.
 *
 * tfjs has no checkpoint op. The block runs inside `tf.customGrad`, whose forward records no
 * tape (its intermediates are freed at once); the gradient function re-runs the block under
 * a nested `engine.gradients` with the upstream gradient as dy, and returns the gradients of
 * the input and of the block's trainable variables, which are passed to the custom op as
 * explicit inputs so the outer tape routes their gradients back to `variableGrads`.
 *
 * A nested `gradients` call during backprop replaces the engine's active tape and nulls it
 * when done (tfjs-core 4.22 `engine.ts`, which assumes no nesting); the outer tape is put
 * back afterwards, so the outer pass still frees its saved tensors. Dropout masks are seeded
 * per step and layer, so the recomputation draws the same masks and the gradients are exact.
 */
import * as tf from '@tensorflow/tfjs';

/** The engine internals this relies on (tfjs-core 4.22). */
interface EngineInternals {
  state: { activeTape: unknown };
  gradients(
    f: () => tf.Tensor,
    xs: tf.Tensor[],
    dy?: tf.Tensor,
    allowNoGradients?: boolean,
  ): { value: tf.Tensor; grads: Array<tf.Tensor | undefined> };
}

/**
 * Runs `body(x, constants)` with its activations recomputed in backward. `constants` are the
 * other tensors the block reads (attention bias, rotary tables): they are saved with the
 * input, because the forward pass frees them before backward runs. `variables` are the
 * block's trainables.
 */
export function checkpointed<T extends tf.Tensor>(
  body: (x: T, constants: readonly tf.Tensor[]) => T,
  x: T,
  constants: readonly tf.Tensor[],
  variables: readonly tf.Variable[],
): T {
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const input = args[0] as T;
    const inputConstants = args.slice(1, 1 + constants.length) as tf.Tensor[];
    const save = args[args.length - 1] as tf.GradSaveFunc;
    save([input, ...inputConstants]);
    return {
      value: body(input, inputConstants),
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const savedInput = saved[0] as T;
        const savedConstants = saved.slice(1);
        const engine = tf.engine() as unknown as EngineInternals;
        const outerTape = engine.state.activeTape;
        try {
          const { value, grads } = engine.gradients(
            () => body(savedInput, savedConstants),
            [savedInput, ...variables],
            dy as tf.Tensor,
            true,
          );
          value.dispose();
          const inputGrad = grads[0] ?? tf.zerosLike(savedInput);
          const variableGrads = variables.map((v, i) => grads[i + 1] ?? tf.zerosLike(v));
          // The constants are not trained: their gradients are never read.
          const constantGrads = savedConstants.map((c) => tf.zerosLike(c));
          return [inputGrad, ...constantGrads, ...variableGrads];
        } finally {
          engine.state.activeTape = outerTape;
        }
      },
    };
  });
  return op(x, ...constants, ...variables);
}
