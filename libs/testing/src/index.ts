export * from './app-process';
export * from './repo-root';
export * from './wait-for';
export * from './queue-keys';
