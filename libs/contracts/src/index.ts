export * from './errors';
export * from './files';
export * from './hyperparameters';
export * from './ids';
export * from './job-status';
export * from './jobs';
export * from './lora';
export * from './queues';
