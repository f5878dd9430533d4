/** A config.json that cannot be honoured. `key` names the offending config field. */
export class ModelConfigError extends Error {
  override readonly name = 'ModelConfigError';

  constructor(
    message: string,
    readonly key?: string,
  ) {
    super(message);
  }
}

/** Weights that do not fit the config: missing, unexpected or mis-shaped tensors. */
export class ModelWeightsError extends Error {
  override readonly name = 'ModelWeightsError';

  constructor(
    message: string,
    readonly tensorName?: string,
  ) {
    super(message);
  }
}
