// Shared Jest settings for every project: SWC transpiles TypeScript (keeping decorator
// metadata for Nest and TypeORM), and workspace libs resolve to their sources so tests
// never depend on a prior build.
const path = require('node:path');

module.exports = (projectDir, displayName) => ({
  displayName,
  rootDir: projectDir,
  testEnvironment: 'node',
  testMatch: ['<rootDir>/src/**/*.spec.ts', '<rootDir>/test/**/*.spec.ts'],
  transform: {
    '^.+\\.(t|j)s$': [
      '@swc/jest',
      {
        jsc: {
          target: 'es2022',
          parser: { syntax: 'typescript', decorators: true },
          transform: {
            legacyDecorator: true,
            decoratorMetadata: true,
            useDefineForClassFields: false,
          },
        },
        module: { type: 'commonjs' },
        sourceMaps: 'inline',
      },
    ],
  },
  moduleNameMapper: {
    '^@lorafleet/(contracts|data|db|lora-core|testing)$': path.join(
      __dirname,
      'libs/$1/src/index.ts',
    ),
  },
  moduleFileExtensions: ['ts', 'js', 'json'],
});
