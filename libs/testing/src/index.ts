export * from './app-process';
export * from './free-port';
export * from './preference-fixtures';
export * from './queue-keys';
export * from './repo-root';
export * from './scratch-database';
export * from './service-faults';
export * from './wait-for';
