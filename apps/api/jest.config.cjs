const preset = require('../../jest.preset.cjs')(__dirname, 'api');

module.exports = {
  ...preset,
  // @fastify/static (used by bull-board) requires content-disposition 3, which is ESM-only.
  // Node ≥ 20.19 loads it through require(esm); Jest's module runtime cannot, so SWC
  // transpiles that one package to CommonJS for the tests.
  transformIgnorePatterns: ['/node_modules/(?!content-disposition/)'],
};
