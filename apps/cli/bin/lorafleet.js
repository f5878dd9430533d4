#!/usr/bin/env node
'use strict';
// Thin launcher: the CLI is compiled to ../dist by `nx run cli:build`.
const { main } = require('../dist/main.js');

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error) => {
    process.stderr.write(`fatal: ${error && error.stack ? error.stack : String(error)}\n`);
    process.exitCode = 1;
  },
);
