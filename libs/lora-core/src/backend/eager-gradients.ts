/**
 * Backprop that frees memory as it goes (issue 13).
 *
 * tfjs-core 4.22's `engine.gradients` walks the tape backward and keeps every intermediate
 * gradient, and every tensor the forward pass saved, until the whole backward pass ends
 * (they are released by the enclosing `tidy('backward')` and a final sweep of the tape). A
 * LoRA step on a real model therefore peaks at roughly twice its saved activations. Each
 * tape node is visited exactly once, so once a node's input gradients exist, the gradients
 * of its outputs and the tensors it saved are dead: this replacement of `engine.gradients`
 * disposes them right there, so memory falls as backward proceeds. Values are unchanged
 * (the same kernels run in the same order).
 *
 * It is the stock algorithm otherwise (same pruning of the tape to the nodes between xs and
 * y, same float32 and shape checks, same accumulation by `add`), written against the engine
 * fields that algorithm uses. A gradient tensor object is never stored under two ids (an
 * identity gradient returns dy itself): such a value is cloned (free: shared data), so
 * disposing one entry never frees another. The caller's `dy` is never disposed.
 */
import * as tf from '@tensorflow/tfjs';

interface TapeNode {
  id: number;
  kernelName: string;
  inputs: Record<string, tf.Tensor>;
  outputs: tf.Tensor[];
  gradient?: (dys: Array<tf.Tensor | null>) => Record<string, () => tf.Tensor>;
  saved?: tf.Tensor[];
}

interface EngineInternals {
  state: { activeTape: TapeNode[] | null; gradientDepth: number };
  scopedRun<T>(start: () => void, end: () => void, f: () => T): T;
  startTape(): void;
  endTape(): void;
  tidy<T extends tf.TensorContainer>(nameOrFn: string | (() => T), fn?: () => T): T;
  gradients: GradientsFn;
}

type GradientsFn = (
  f: () => tf.Tensor,
  xs: tf.Tensor[],
  dy?: tf.Tensor,
  allowNoGradients?: boolean,
) => { value: tf.Tensor; grads: tf.Tensor[] };

/** Nodes on a path from some x to y, with inputs pruned to those that depend on an x. */
function nodesBetween(
  tape: readonly TapeNode[],
  xs: readonly tf.Tensor[],
  y: tf.Tensor,
): TapeNode[] {
  const fromX = new Set<number>(xs.map((x) => x.id));
  const nodesFromX = new Set<number>();
  for (const node of tape) {
    if (Object.values(node.inputs).some((input) => fromX.has(input.id))) {
      nodesFromX.add(node.id);
      for (const output of node.outputs) fromX.add(output.id);
    }
  }
  const toY = new Set<number>([y.id]);
  const nodesToY = new Set<number>();
  for (let i = tape.length - 1; i >= 0; i--) {
    const node = tape[i];
    if (node.outputs.some((output) => toY.has(output.id))) {
      nodesToY.add(node.id);
      for (const input of Object.values(node.inputs)) toY.add(input.id);
    }
  }
  return tape
    .filter((node) => nodesFromX.has(node.id) && nodesToY.has(node.id))
    .map((node) => ({
      ...node,
      inputs: Object.fromEntries(
        Object.entries(node.inputs).filter(([, input]) => fromX.has(input.id)),
      ),
    }));
}

let installed = false;

/** Replaces the engine's `gradients` (used by `tf.grads`, `tf.variableGrads`) once per process. */
export function installEagerGradients(): void {
  if (installed) return;
  const engine = tf.engine() as unknown as EngineInternals;
  engine.gradients = function eagerGradients(
    this: EngineInternals,
    f,
    xs,
    dy,
    allowNoGradients = false,
  ) {
    if (xs.length === 0) throw new Error('gradients() received an empty list of xs.');
    if (dy != null && dy.dtype !== 'float32')
      throw new Error(`dy must have 'float32' dtype, but has '${dy.dtype}'`);
    const y = this.scopedRun(
      () => this.startTape(),
      () => this.endTape(),
      () => this.tidy('forward', f),
    );
    if (!(y instanceof tf.Tensor))
      throw new Error('The result y returned by f() must be a tensor.');
    const tape = nodesBetween(this.state.activeTape ?? [], xs, y);
    if (!allowNoGradients && tape.length === 0 && xs.length > 0) {
      throw new Error(
        'Cannot compute gradient of y=f(x) with respect to x. Make sure that the f you passed encloses all operations that lead from x to y.',
      );
    }
    return this.tidy('backward', () => {
      const grads = new Map<number, tf.Tensor>();
      const stored = new Set<tf.Tensor>();
      const requested = new Set<number>(xs.map((x) => x.id));
      const store = (id: number, value: tf.Tensor) => {
        const unique = stored.has(value) ? tf.clone(value) : value;
        grads.set(id, unique);
        stored.add(unique);
      };
      const external = dy ?? null;
      store(y.id, dy ?? tf.ones(y.shape));
      // Saved tensors may be freed early only when no outer gradient will replay this tape.
      const releaseSaved = this.state.gradientDepth === 0;
      for (let i = tape.length - 1; i >= 0; i--) {
        const node = tape[i];
        if (node.gradient == null) {
          throw new Error(
            `Cannot compute gradient: gradient function not found for ${node.kernelName}.`,
          );
        }
        const dys = node.outputs.map((o) => grads.get(o.id) ?? null);
        const inputGradients = node.gradient(dys);
        for (const [inputName, x] of Object.entries(node.inputs)) {
          if (!(inputName in inputGradients)) {
            throw new Error(
              `Cannot backprop through input ${inputName}. Available gradients found: ${Object.keys(inputGradients).join(',')}.`,
            );
          }
          const dx = this.tidy(() => inputGradients[inputName]());
          if (dx.dtype !== 'float32') {
            throw new Error(
              `Error in gradient for op ${node.kernelName}. The gradient of input ${inputName} must have 'float32' dtype, but has '${dx.dtype}'`,
            );
          }
          if (!tf.util.arraysEqual(dx.shape, x.shape)) {
            throw new Error(
              `Error in gradient for op ${node.kernelName}. The gradient of input '${inputName}' has shape '${dx.shape.join(',')}', which does not match the shape of the input '${x.shape.join(',')}'`,
            );
          }
          const current = grads.get(x.id);
          if (current === undefined) {
            store(x.id, dx);
          } else {
            const sum = tf.add(current, dx);
            grads.delete(x.id);
            stored.delete(current);
            if (current !== external) current.dispose();
            if (!stored.has(dx) && dx !== external) dx.dispose();
            store(x.id, sum);
          }
        }
        // This node's outputs have no other producer: their gradients are spent.
        for (const output of node.outputs) {
          const spent = grads.get(output.id);
          if (spent === undefined || requested.has(output.id)) continue;
          grads.delete(output.id);
          stored.delete(spent);
          if (spent !== external) spent.dispose();
        }
        if (releaseSaved) for (const t of node.saved ?? []) t.dispose();
      }
      const result = xs.map((x) => grads.get(x.id)) as tf.Tensor[];
      if (releaseSaved) {
        for (const node of this.state.activeTape ?? [])
          for (const t of node.saved ?? []) t.dispose();
        this.state.activeTape = null;
      }
      return { value: y, grads: result };
    });
  };
  installed = true;
}
