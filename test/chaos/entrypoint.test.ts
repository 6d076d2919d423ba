import { expect } from 'chai';
import * as path from 'node:path';

// deploy/docker/entrypoint.js: FLOTILLA_* environment variables become flags of `controller`
// and `broker`; flags on the command line win; other subcommands pass through untouched.

// Plain JS outside tsconfig (it ships in the image as is): loaded from the repository.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const entrypoint = require(path.resolve(__dirname, '..', '..', '..', 'deploy', 'docker', 'entrypoint.js')) as {
  buildArgv(argv: string[], env: Record<string, string | undefined>): string[];
  listenOf(argv: string[]): string | undefined;
};

describe('image entrypoint (deploy/docker/entrypoint.js)', () => {
  it('maps FLOTILLA_* variables to controller flags and defaults --data-dir to the /data volume', () => {
    const argv = entrypoint.buildArgv(['controller'], {
      FLOTILLA_NODE_ID: '2',
      FLOTILLA_LISTEN: 'controller-2:9094',
      FLOTILLA_VOTERS: '1@c1:9093,2@controller-2:9094',
      FLOTILLA_JOIN: 'true',
      FLOTILLA_CONTROLLERS: 'ignored-for-a-controller:1',
      FLOTILLA_TICK_MS: '',
    });
    expect(argv).to.deep.equal(['controller', '--node-id', '2', '--listen', 'controller-2:9094', '--voters', '1@c1:9093,2@controller-2:9094', '--join', '--data-dir', '/data']);
  });

  it('lets a flag on the command line win over its variable (either flag form)', () => {
    const argv = entrypoint.buildArgv(['broker', '--node-id', '7', '--data-dir=/elsewhere'], { FLOTILLA_NODE_ID: '3', FLOTILLA_DATA_DIR: '/data/x', FLOTILLA_CONTROLLERS: 'c1:9093' });
    expect(argv).to.deep.equal(['broker', '--node-id', '7', '--data-dir=/elsewhere', '--controllers', 'c1:9093']);
    expect(entrypoint.listenOf(['broker', '--listen=b1:9193'])).to.equal('b1:9193');
  });

  it('passes other subcommands through unchanged (no --data-dir added)', () => {
    expect(entrypoint.buildArgv(['topics', 'list'], { FLOTILLA_NODE_ID: '1' })).to.deep.equal(['topics', 'list']);
  });
});
