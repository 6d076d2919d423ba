import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { expect } from 'chai';
import { FlotillaError } from '../../shared/errors/error-codes';
import { FakeController, QUORUM_REPLY, deadAddress } from '../client/fake-controller';

// The `flotilla` binary as a user runs it: help everywhere (exit 0), usage errors (exit 2
// with a message), operation errors as `error: NAME: message` (exit 1), and --json output,
// against a fake controller on 127.0.0.1.

const CLI = path.resolve(__dirname, '..', '..', 'cli', 'main.js');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

// Asynchronous on purpose: the fake controller answers from this same process.
function run(args: readonly string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    const base = { ...process.env };
    delete base.FLOTILLA_BOOTSTRAP;
    execFile(process.execPath, [CLI, ...args], { env: { ...base, ...env }, timeout: 45_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Runs at most `n` tasks at once. */
function pool(n: number): <T>(task: () => Promise<T>) => Promise<T> {
  let active = 0;
  const waiting: (() => void)[] = [];
  return async (task) => {
    while (active >= n) await new Promise<void>((resolve) => waiting.push(resolve));
    active++;
    try {
      return await task();
    } finally {
      active--;
      waiting.shift()?.();
    }
  };
}

const COMMANDS = [
  [],
  ['controller'],
  ['broker'],
  ['cluster'],
  ['cluster', 'up'],
  ['cluster', 'describe'],
  ['quorum'],
  ['quorum', 'status'],
  ['quorum', 'add-controller'],
  ['quorum', 'remove-controller'],
  ['quorum', 'transfer-leadership'],
  ['topics'],
  ['topics', 'create'],
  ['topics', 'list'],
  ['topics', 'describe'],
  ['topics', 'delete'],
  ['events'],
  ['produce'],
  ['consume'],
];

const USAGE_ERRORS: [string[], RegExp][] = [
  [['no-such-command'], /unknown command/],
  [['topics', 'create', 'demo', '--replication-factor', '1'], /--partitions/],
  [['topics', 'create', 'demo', '--partitions', 'three', '--replication-factor', '1'], /--partitions.*integer/],
  [['topics', 'create', 'demo', '--partitions', '1', '--replication-factor', '1', '--config', 'novalue'], /key=value/],
  [['topics', 'list', '--bootstrap', 'not-an-address'], /HOST:PORT/],
  [['events', '--max', '0'], /--max/],
  [['controller', '--node-id', '1', '--listen', '127.0.0.1:1', '--data-dir', '/tmp/x'], /--voters/],
  [['controller', '--node-id', '4', '--listen', '127.0.0.1:1', '--voters', '1@127.0.0.1:1', '--data-dir', '/tmp/x'], /must include --node-id 4/],
  [['controller', '--node-id', '1', '--listen', '127.0.0.1:1', '--voters', '1@a:1,1@b:2', '--data-dir', '/tmp/x'], /appears twice/],
  [['quorum', 'add-controller', '5'], /ID@HOST:PORT/],
  [['cluster', 'up', '--brokers', '100', '--data-dir', '/tmp/flotilla-never-used'], /--brokers/],
  [['produce', 't', '--idempotent', '--acks', '1'], /--idempotent needs --acks all/],
  [['produce', 't', '--acks', '2'], /--acks/],
  [['produce', 't', '--size', '10'], /--size needs --count/],
  [['consume', 't', '--from-beginning', '--offset', '3'], /exclude each other/],
  [['consume', 't', '--max', '-1'], /--max/],
];

describe('cli: help and usage errors', function () {
  this.timeout(60_000);

  // Each run starts a node process: start them all up front, a few at a time, and let each
  // test check its own.
  const limit = pool(4);
  const helpRuns = new Map<string, Promise<Run>>();
  const usageRuns = new Map<string, Promise<Run>>();
  before(() => {
    for (const cmd of COMMANDS) helpRuns.set(cmd.join(' '), limit(() => run([...cmd, '--help'])));
    for (const [args] of USAGE_ERRORS) usageRuns.set(args.join(' '), limit(() => run(args)));
  });

  for (const cmd of COMMANDS) {
    it(`flotilla ${[...cmd, '--help'].join(' ')} exits 0 with usage`, async () => {
      const r = await helpRuns.get(cmd.join(' '))!;
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.contain(`Usage: flotilla ${cmd.join(' ')}`.trimEnd());
    });
  }

  for (const [args, message] of USAGE_ERRORS) {
    it(`flotilla ${args.join(' ')} is a usage error (exit 2)`, async () => {
      const r = await usageRuns.get(args.join(' '))!;
      expect(r.code, r.stdout + r.stderr).to.equal(2);
      expect(r.stderr).to.match(message);
      expect(r.stdout).to.equal('');
    });
  }
});

describe('cli: against a controller', function () {
  this.timeout(60_000);
  let fake: FakeController;
  beforeEach(async () => {
    fake = await FakeController.start();
  });
  afterEach(() => fake.stop());

  it('prints a typed error as `error: NAME: message` and exits 1', async () => {
    fake.on('CreateTopic', () => {
      throw new FlotillaError('INVALID_REPLICATION_FACTOR', 'replication factor 1 exceeds the 0 live brokers');
    });
    const r = await run(['topics', 'create', 'demo', '--partitions', '3', '--replication-factor', '1', '--config', 'retention.ms=1000', '--bootstrap', fake.address]);
    expect(r.code).to.equal(1);
    expect(r.stderr.trim()).to.equal('error: INVALID_REPLICATION_FACTOR: replication factor 1 exceeds the 0 live brokers');
    expect(fake.calls[0]!.request).to.deep.include({ name: 'demo', partitions: 3, replicationFactor: 1, configs: { 'retention.ms': '1000' } });
  });

  it('quorum status --json gives leaderId, term, commitIndex and voters', async () => {
    fake.on('DescribeQuorum', () => QUORUM_REPLY);
    const r = await run(['quorum', 'status', '--json'], { FLOTILLA_BOOTSTRAP: fake.address });
    expect(r.code, r.stderr).to.equal(0);
    const q = JSON.parse(r.stdout);
    expect(q).to.include({ leaderId: 2, term: 3, commitIndex: 10 });
    expect(q.voters).to.deep.equal(QUORUM_REPLY.voters);
  });

  it('topics describe prints a table, and with --json an array of topics', async () => {
    fake.on('DescribeTopics', () => ({
      topics: [
        {
          name: 'demo',
          topicId: 'id-1',
          configs: {},
          partitions: [
            { partition: 0, leader: 1, leaderEpoch: 0, partitionEpoch: 0, replicas: [1, 2], isr: [1, 2], status: 'PARTITION_STATUS_ONLINE' },
            { partition: 1, leader: -1, leaderEpoch: 1, partitionEpoch: 3, replicas: [2], isr: [2], status: 'PARTITION_STATUS_OFFLINE', why: 'broker 2 fenced' },
          ],
        },
      ],
    }));
    const table = await run(['topics', 'describe', 'demo', '--bootstrap', fake.address]);
    expect(table.code, table.stderr).to.equal(0);
    expect(table.stdout).to.match(/PARTITION\s+LEADER\s+REPLICAS\s+ISR\s+HW\s+STATUS/);
    // A controller serves no Broker API: high watermarks are unknown ('-').
    expect(table.stdout).to.match(/0\s+1\s+1,2\s+1,2\s+-\s+online/);
    expect(table.stdout).to.match(/1\s+none\s+2\s+2\s+-\s+offline \(broker 2 fenced\)/);
    const json = await run(['topics', 'describe', '--json', '--bootstrap', fake.address]);
    const topics = JSON.parse(json.stdout);
    expect(topics).to.be.an('array').with.length(1);
    expect(topics[0].partitions[1]).to.include({ partition: 1, leader: -1, status: 'offline', why: 'broker 2 fenced', highWatermark: null });
    expect(topics[0].partitions[0]).to.deep.include({ replicas: [1, 2], isr: [1, 2] });
  });

  it('events prints one line per event: offset, time, text', async () => {
    fake.on('ListEvents', (req) => {
      expect(req).to.include({ fromOffset: 5, max: 2 });
      return { events: [{ offset: 5, timestampMs: Date.UTC(2025, 0, 2, 3, 4, 5), kind: 'topic-created', text: 'topic demo created' }] };
    });
    const r = await run(['events', '--from-offset', '5', '--max', '2', '--bootstrap', fake.address]);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.trim()).to.equal('5  2025-01-02T03:04:05.000Z  topic demo created');
  });

  it('an unreachable cluster is CONTROLLER_UNAVAILABLE within --timeout-ms', async () => {
    const t0 = Date.now();
    const r = await run(['topics', 'list', '--timeout-ms', '300', '--bootstrap', await deadAddress()]);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/^error: CONTROLLER_UNAVAILABLE: /);
    expect(Date.now() - t0).to.be.below(10_000);
  });
});
