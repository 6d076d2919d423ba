import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { expect } from 'chai';
import { eventually } from './controller-launcher';
import { RealCluster } from './real-cluster';

// `flotilla produce`, `flotilla consume` and `flotilla topics describe` run as a user runs
// them, against real processes: three controllers and three brokers on loopback. Each test
// names what it checks; they share the cluster and leave every broker running.

const CLI = path.resolve(__dirname, '..', '..', 'cli', 'main.js');
/** Bound on one CLI run; a run that needs longer is killed and fails its test. */
const RUN_TIMEOUT_MS = 60_000;

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function flotilla(args: readonly string[], stdin = ''): Promise<Run> {
  return new Promise((resolve) => {
    const env: NodeJS.ProcessEnv = { ...process.env, FLOTILLA_PRETTY: '' };
    delete env.FLOTILLA_BOOTSTRAP;
    const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const killer = setTimeout(() => child.kill('SIGKILL'), RUN_TIMEOUT_MS);
    child.on('close', (code) => {
      clearTimeout(killer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.on('error', () => undefined); // a child that exits early closes its stdin
    child.stdin.end(stdin);
  });
}

function lines(s: string): string[] {
  return s.split('\n').filter((l) => l !== '');
}

describe('cli end to end: produce, consume and topics describe against real brokers (issue 3 §6)', function () {
  this.timeout(180_000);
  let cluster: RealCluster;
  let bootstrap: string[];

  before(async function () {
    this.timeout(120_000);
    cluster = await RealCluster.start({ sessionTimeoutMs: 3_000, replicaLagTimeMaxMs: 2_000, heartbeatIntervalMs: 500 });
    bootstrap = ['--bootstrap', cluster.bootstrap().join(',')];
  });

  after(async () => {
    await cluster?.shutdown();
  });

  afterEach(async function () {
    if (this.currentTest?.state === 'failed') console.error(cluster.logTails());
    await cluster.restartDead();
  });

  async function createTopic(name: string, partitions: number): Promise<void> {
    const r = await flotilla(['topics', 'create', name, '--partitions', String(partitions), '--replication-factor', '3', '--config', 'min.insync.replicas=2', ...bootstrap]);
    expect(r.code, r.stderr).to.equal(0);
    await cluster.writable(name);
  }

  async function describedHighWatermarks(topic: string): Promise<(number | null)[]> {
    const r = await flotilla(['topics', 'describe', topic, '--json', ...bootstrap]);
    expect(r.code, r.stderr).to.equal(0);
    const [t] = JSON.parse(r.stdout) as { name: string; partitions: { partition: number; highWatermark: number | null }[] }[];
    expect(t!.name).to.equal(topic);
    return t!.partitions.sort((a, b) => a.partition - b.partition).map((p) => p.highWatermark);
  }

  it('produce reads stdin lines, exits 0; consume --from-beginning --max N prints them in order and exits 0; describe --json shows the high watermark equal to the count', async () => {
    await createTopic('cli-lines', 1);
    const values = Array.from({ length: 200 }, (_, i) => `line ${i} ${'y'.repeat(i % 17)}`);
    const p = await flotilla(['produce', 'cli-lines', ...bootstrap], values.join('\n') + '\n');
    expect(p.code, p.stderr).to.equal(0);
    expect(p.stderr).to.match(/produced 200 records/);
    const c = await flotilla(['consume', 'cli-lines', '--from-beginning', '--max', '200', ...bootstrap]);
    expect(c.code, c.stderr).to.equal(0);
    expect(lines(c.stdout)).to.deep.equal(values);
    expect(await describedHighWatermarks('cli-lines')).to.deep.equal([200]);
  });

  it('produce --count N --size B over three partitions, idempotent: exits 0; consume reads N records of B bytes; describe --json high watermarks sum to N', async () => {
    await createTopic('cli-count', 3);
    const p = await flotilla(['produce', 'cli-count', '--count', '600', '--size', '256', '--idempotent', ...bootstrap]);
    expect(p.code, p.stderr).to.equal(0);
    const c = await flotilla(['consume', 'cli-count', '--from-beginning', '--max', '600', ...bootstrap]);
    expect(c.code, c.stderr).to.equal(0);
    const got = lines(c.stdout);
    expect(got).to.have.length(600);
    expect(got.every((l) => l === 'x'.repeat(256))).to.equal(true);
    const hws = await describedHighWatermarks('cli-count');
    expect(hws.every((h) => typeof h === 'number')).to.equal(true);
    expect((hws as number[]).reduce((a, b) => a + b, 0)).to.equal(600);
  });

  it('produce with acks=all and two of three brokers down exits 1 with the count of unacknowledged records (NOT_ENOUGH_REPLICAS); none of them is consumed after the brokers return', async () => {
    await createTopic('cli-down', 1);
    const leader = await cluster.leaderOf('cli-down', 0);
    const dead = [1, 2, 3].filter((id) => id !== leader);
    for (const id of dead) await cluster.brokers.kill(id, 'SIGKILL');
    await eventually('an ISR of one', async () => {
      const p = (await cluster.partitionsOf('cli-down'))[0]!;
      if (p.isr.length !== 1) throw new Error(JSON.stringify(p));
    }, { timeoutMs: 30_000 });
    const p = await flotilla(['produce', 'cli-down', '--acks', 'all', '--timeout-ms', '3000', '--json', ...bootstrap], 'lost-1\nlost-2\nlost-3\nlost-4\nlost-5\n');
    expect(p.code, p.stderr).to.equal(1);
    expect(p.stderr).to.match(/error: 5 of 5 records not acknowledged/);
    const summary = JSON.parse(p.stdout) as { records: number; acknowledged: number; failed: number; firstError?: { name: string; message: string } };
    expect(summary).to.include({ records: 5, acknowledged: 0, failed: 5 });
    // The last attempt's answer, or (should the expiry check see the batch first) the delivery timeout naming it.
    if (summary.firstError?.name !== 'NOT_ENOUGH_REPLICAS') {
      expect(summary.firstError?.name).to.equal('REQUEST_TIMED_OUT');
      expect(summary.firstError?.message).to.contain('NOT_ENOUGH_REPLICAS');
    }

    await cluster.restartDead();
    await cluster.fullIsr('cli-down');
    expect(await describedHighWatermarks('cli-down')).to.deep.equal([0]);
    const after = await flotilla(['produce', 'cli-down', ...bootstrap], 'after\n');
    expect(after.code, after.stderr).to.equal(0);
    const c = await flotilla(['consume', 'cli-down', '--from-beginning', '--max', '1', ...bootstrap]);
    expect(c.code, c.stderr).to.equal(0);
    expect(lines(c.stdout)).to.deep.equal(['after']);
    expect(await describedHighWatermarks('cli-down')).to.deep.equal([1]);
  });
});
