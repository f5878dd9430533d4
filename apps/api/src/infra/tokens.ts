/** Injection tokens for infrastructure that has no class of its own. */
export const DATA_SOURCE = Symbol('DATA_SOURCE');
export const REDIS = Symbol('REDIS');
export const FINE_TUNE_QUEUE = Symbol('FINE_TUNE_QUEUE');
