import Mocha = require('mocha');

// Mocha's Spec output, then one last line that CI parses:
//   tests: 12 passed, 0 failed
//   tests: 12 passed, 1 failed, 3 skipped
// Loaded by path from .mocharc.js, so it must stay a CommonJS `export =`.

const { EVENT_RUN_END } = Mocha.Runner.constants;

class SummaryReporter extends Mocha.reporters.Spec {
  constructor(runner: Mocha.Runner, options?: Mocha.MochaOptions) {
    super(runner, options);
    // Registered after Spec's own listener, so this prints after its epilogue.
    runner.once(EVENT_RUN_END, () => {
      const { passes, failures, pending } = this.stats;
      const skipped = pending > 0 ? `, ${pending} skipped` : '';
      process.stdout.write(`tests: ${passes} passed, ${failures} failed${skipped}\n`);
    });
  }
}

export = SummaryReporter;
