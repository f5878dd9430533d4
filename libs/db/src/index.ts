export * from './data-source';
export * from './entities';
export * from './ids';
export * from './pg-pool';
export * from './repositories';
export * from './process-shutdown';
export * from './redis-clients';
