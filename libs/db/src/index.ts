export * from './data-source';
export * from './entities';
export * from './ids';
export * from './pg-pool';
export * from './repositories';
export * from './testing/free-port';
export * from './testing/scratch-database';
export * from './testing/service-faults';
