export * from './adapters.repository';
export * from './files.repository';
export * from './jobs.repository';
export * from './outbox.repository';
export * from './tenants.repository';
export * from './workers.repository';
export * from './serving-adapters.repository';
