// Barrel for code inside lora-core that imports the model layer as a unit (e.g. the trainer).
export * from './causal-lm.model';
export * from './gpt2.model';
export * from './llama.model';
export * from './lora-linear.layer';
export * from './model.config';
export * from './model.errors';
export * from './hf-model.loader';
