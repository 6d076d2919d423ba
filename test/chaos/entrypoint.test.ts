import { expect } from 'chai';
import * as path from 'node:path';

// deploy/docker/entrypoint.js: FLOTILLA_* environment variables become flags of `controller`
// and `broker`; flags on the command line win; other subcommands pass through untouched.

// Plain JS outside tsconfig (it ships in the image as is): loaded from the repository.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const entrypoint = require(path.resolve(__dirname, '..', '..', '..', 'deploy', 'docker', 'entrypoint.js')) as {
  buildArgv(argv: string[], env: Record<string, string | undefined>, interfaces?: Record<string, Array<{ family: string; address: string; internal: boolean }>>): string[];
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

  it('replaces {container-ip} in the advertised address by the first non-loopback IPv4 address, and refuses when there is none', () => {
    const interfaces = {
      lo: [{ family: 'IPv4', address: '127.0.0.1', internal: true }],
      eth1: [{ family: 'IPv4', address: '10.9.0.7', internal: false }],
      eth0: [
        { family: 'IPv6', address: 'fe80::1', internal: false },
        { family: 'IPv4', address: '172.18.0.5', internal: false },
      ],
    };
    expect(entrypoint.buildArgv(['broker'], { FLOTILLA_ADVERTISED_ADDRESS: '{container-ip}:9193' }, interfaces)).to.deep.equal(['broker', '--advertised-address', '172.18.0.5:9193', '--data-dir', '/data']);
    expect(entrypoint.buildArgv(['broker', '--advertised-address={container-ip}:1'], {}, interfaces)).to.deep.equal(['broker', '--advertised-address=172.18.0.5:1', '--data-dir', '/data']);
    // Only the advertised address is rewritten.
    expect(entrypoint.buildArgv(['broker', '--rack', '{container-ip}'], {}, interfaces)).to.include('{container-ip}');
    expect(() => entrypoint.buildArgv(['broker'], { FLOTILLA_ADVERTISED_ADDRESS: '{container-ip}:9193' }, { lo: interfaces.lo })).to.throw(/no IPv4 interface/);
  });
});
