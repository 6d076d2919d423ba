import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { expect } from 'chai';
import { encodeRecordBatch } from '../../shared/records';
import { FakeCluster } from '../client/fake-broker';
import { FakeController } from '../client/fake-controller';

// `flotilla produce`, `flotilla consume` and the high watermarks of `topics describe`, run as
// a user runs them, against fake brokers (and a fake controller) in this process.

const CLI = path.resolve(__dirname, '..', '..', 'cli', 'main.js');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(args: readonly string[], stdin = ''): Promise<Run> {
  return new Promise((resolve) => {
    const env = { ...process.env };
    delete env.FLOTILLA_BOOTSTRAP;
    const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('close', (code) => {
      clearTimeout(killer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
    child.stdin.end(stdin);
  });
}

describe('cli: produce and consume', function () {
  this.timeout(60_000);
  let cluster: FakeCluster;
  beforeEach(async () => {
    cluster = await FakeCluster.start({ brokers: 2, topics: { t: 1, two: 2 } });
  });
  afterEach(() => cluster.stop());
  const bootstrap = (): string[] => ['--bootstrap', cluster.addresses.join(',')];

  it('produce sends each stdin line as a record, exits 0 and reports throughput on stderr', async () => {
    const r = await run(['produce', 't', ...bootstrap()], 'one\ntwo\nthree\n');
    expect(r.code, r.stderr).to.equal(0);
    expect(cluster.values('t', 0)).to.deep.equal(['one', 'two', 'three']);
    expect(r.stderr).to.match(/produced 3 records .* records\/s/);
    expect(r.stdout).to.equal('');
  });

  it('produce exits 1 with the count when records are not acknowledged', async () => {
    cluster.inject({ method: 'Produce', kind: 'refuse', error: 'RECORD_TOO_LARGE', times: 100 });
    const r = await run(['produce', 't', '--linger-ms', '0', ...bootstrap()], 'a\nb\nc\n');
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/error: 3 of 3 records not acknowledged \(first error: RECORD_TOO_LARGE: /);
    expect(cluster.values('t', 0)).to.deep.equal([]);
  });

  it('produce --count N --size B generates N records of B bytes; --idempotent --key places them on the key\'s partition', async () => {
    const r = await run(['produce', 'two', '--count', '25', '--size', '64', '--idempotent', '--key', 'abc', ...bootstrap()]);
    expect(r.code, r.stderr).to.equal(0);
    // murmur2("abc") = 479470107 -> partition 1 of 2.
    const records = cluster.records('two', 1);
    expect(records).to.have.length(25);
    expect(records.every((x) => x.value!.length === 64 && x.key!.toString() === 'abc')).to.equal(true);
    expect(cluster.records('two', 0)).to.have.length(0);
    expect(cluster.produceLog.every((e) => e.partitions.every((p) => p.producerId >= 0)), 'idempotent batches carry a producer id').to.equal(true);
  });

  it('consume --from-beginning --max N prints N values, one per line, and exits 0', async () => {
    cluster.append('t', 0, encodeRecordBatch({ records: ['r0', 'r1', 'r2', 'r3'].map((v) => ({ value: Buffer.from(v), timestampMs: 1 })) }));
    const r = await run(['consume', 't', '--from-beginning', '--max', '3', ...bootstrap()]);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.equal('r0\nr1\nr2\n');
  });

  it('consume stops when nothing arrived for --timeout-ms; --offset and --partition choose where to read', async () => {
    cluster.append('two', 1, encodeRecordBatch({ records: ['p0', 'p1', 'p2'].map((v) => ({ value: Buffer.from(v), timestampMs: 1 })) }));
    cluster.append('two', 0, encodeRecordBatch({ records: [{ value: Buffer.from('other'), timestampMs: 1 }] }));
    const r = await run(['consume', 'two', '--partition', '1', '--offset', '1', '--timeout-ms', '500', ...bootstrap()]);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.equal('p1\np2\n');
  });

  it('round trip: what produce acknowledged, consume prints in order', async () => {
    const lines = Array.from({ length: 100 }, (_, i) => `line-${i}`);
    const p = await run(['produce', 't', '--acks', '1', ...bootstrap()], `${lines.join('\n')}\n`);
    expect(p.code, p.stderr).to.equal(0);
    const c = await run(['consume', 't', '--from-beginning', '--max', '100', ...bootstrap()]);
    expect(c.code, c.stderr).to.equal(0);
    expect(c.stdout.split('\n').slice(0, -1)).to.deep.equal(lines);
  });

  it('consume of an unknown topic fails typed (exit 1)', async () => {
    const r = await run(['consume', 'nope', '--max', '1', '--timeout-ms', '1000', ...bootstrap()]);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/^error: UNKNOWN_TOPIC: /);
  });

  describe('topics describe with high watermarks', () => {
    let controller: FakeController;
    beforeEach(async () => {
      controller = await FakeController.start();
      controller.on('DescribeTopics', () => ({
        topics: [
          {
            name: 'two',
            topicId: 'id-two',
            configs: {},
            partitions: [0, 1].map((partition) => ({ partition, leader: partition + 1, leaderEpoch: 0, partitionEpoch: 0, replicas: [1, 2], isr: [1, 2], status: 'PARTITION_STATUS_ONLINE' })),
          },
        ],
      }));
    });
    afterEach(() => controller.stop());

    it("shows each partition's high watermark from its leader (JSON highWatermark), '-' when the leader is unreachable", async () => {
      cluster.append('two', 0, encodeRecordBatch({ records: ['a', 'b', 'c'].map((v) => ({ value: Buffer.from(v), timestampMs: 1 })) }));
      const all = ['--bootstrap', [controller.address, ...cluster.addresses].join(',')];
      const table = await run(['topics', 'describe', 'two', ...all]);
      expect(table.code, table.stderr).to.equal(0);
      expect(table.stdout).to.match(/PARTITION\s+LEADER\s+REPLICAS\s+ISR\s+HW\s+STATUS/);
      expect(table.stdout).to.match(/\n0\s+1\s+1,2\s+1,2\s+3\s+online/);
      expect(table.stdout).to.match(/\n1\s+2\s+1,2\s+1,2\s+0\s+online/);
      const json = JSON.parse((await run(['topics', 'describe', 'two', '--json', ...all])).stdout);
      expect(json[0].partitions.map((p: { highWatermark: number }) => p.highWatermark)).to.deep.equal([3, 0]);
      expect(json[0].partitions[0]).to.include({ partition: 0, leader: 1, status: 'online' });
      await cluster.stopBroker(2);
      const down = await run(['topics', 'describe', 'two', ...all]);
      expect(down.code, down.stderr).to.equal(0);
      expect(down.stdout).to.match(/\n0\s+1\s+1,2\s+1,2\s+3\s+online/);
      expect(down.stdout).to.match(/\n1\s+2\s+1,2\s+1,2\s+-\s+online/);
    });
  });
});
