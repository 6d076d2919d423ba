// Runs every test/raft/testdata/*.txt through the interaction interpreter and compares
// each command's output with the golden output stored below it (etcd-io/raft's
// datadriven tests). REWRITE=1 stores the actual output instead; read the diff before
// committing it, because a golden file that records a bug is worse than none.
// Whatever the golden says, a scenario fails if the driver saw a broken invariant.

import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatDataFile, lineDiff, parseDataFile } from './datadriven';
import { InteractionEnv } from './interaction';

/** The source tree's testdata, whether we run from test/raft or dist/test/raft. */
function testdataDir(): string {
  let dir = __dirname;
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('package.json not found above ' + __dirname);
    dir = up;
  }
  return path.join(dir, 'test', 'raft', 'testdata');
}

const dir = testdataDir();
const files = fs.readdirSync(dir).filter((f) => f.endsWith('.txt')).sort();
const rewrite = process.env.REWRITE === '1';

describe('raft scenarios (test/raft/testdata)', () => {
  it('has scenario files', () => {
    expect(files.length).to.be.greaterThan(0);
  });

  for (const file of files) {
    it(file.replace(/\.txt$/, ''), () => {
      const full = path.join(dir, file);
      const parsed = parseDataFile(fs.readFileSync(full, 'utf8'), file);
      const env = new InteractionEnv();
      const actual = parsed.blocks.map((b) => env.run(b.command));
      if (rewrite) {
        fs.writeFileSync(full, formatDataFile(parsed, actual));
      } else {
        const mismatches = parsed.blocks
          .map((b, i) => ({ b, got: actual[i] }))
          .filter(({ b, got }) => b.expected !== got);
        if (mismatches.length > 0) {
          const shown = mismatches.slice(0, 3).map(({ b, got }) => `${file}:${b.line}: ${b.command}\n${lineDiff(b.expected, got)}`);
          const more = mismatches.length > 3 ? `\n(${mismatches.length - 3} more mismatched blocks)` : '';
          expect.fail(`output differs from the golden file (- expected, + actual; REWRITE=1 to regenerate):\n\n${shown.join('\n\n')}${more}`);
        }
      }
      expect(env.violations, `invariant violations in ${file}`).to.deep.equal([]);
    });
  }
});
