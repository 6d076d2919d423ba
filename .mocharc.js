// Mocha runs the compiled tests (`make build` first; `make test` does that).
// Unit, sim, scenario and integration tests all live under test/ as *.test.ts.
'use strict';

// Files named on the command line (`npx mocha dist/test/raft/raft-core.test.js`) run alone;
// mocha would otherwise add them to `spec` and run the whole suite.
const named = process.argv.slice(2).some((a) => a.endsWith('.js') && !a.startsWith('-'));

module.exports = {
  spec: named ? [] : ['dist/test/**/*.test.js'],
  // Prints `tests: N passed, N failed[, N skipped]` last; CI reads that line.
  reporter: './dist/test/support/summary-reporter.js',
  timeout: 60000,
  // Integration tests start servers and child processes; do not hang on a leaked handle.
  exit: true,
  // Stack traces point at the .ts sources (tsconfig emits source maps).
  'node-option': ['enable-source-maps'],
};
