import { expect } from 'chai';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { Admin, Flotilla } from '../../client';
import { ControllerCluster, eventually } from './controller-launcher';
import { StandInBrokers } from './stand-in-brokers';

// Three real controller processes on loopback, with default Raft timeouts. Each test
// names the property it checks (issue 2, §5).

const run = promisify(execFile);
const CLI = path.resolve(__dirname, '..', '..', 'cli', 'main.js');

function adminFor(addresses: string[]): Admin {
  return new Flotilla({ bootstrap: addresses, totalTimeoutMs: 20_000 }).admin();
}

async function leaderOf(admin: Admin): Promise<{ leaderId: number; term: number }> {
  const q = await admin.describeQuorum();
  if (!q.leaderId) throw new Error('no leader yet');
  return { leaderId: q.leaderId, term: q.term };
}

describe('controller quorum (three real processes)', function () {
  this.timeout(120_000);
  let cluster: ControllerCluster;
  let admin: Admin;
  let brokers: StandInBrokers;
  const admins: Admin[] = [];

  function adminOnly(id: number): Admin {
    const a = adminFor([cluster.addressOf(id)]);
    admins.push(a);
    return a;
  }

  beforeEach(async () => {
    // Small snapshot interval so that compaction and InstallSnapshot happen within a test.
    cluster = await ControllerCluster.start({ size: 3, extraArgs: ['--snapshot-every-entries', '20'] });
    admin = adminFor(cluster.bootstrap());
    await eventually('a leader', () => leaderOf(admin));
    brokers = new StandInBrokers(cluster.bootstrap(), [1, 2, 3]);
    await brokers.register();
    brokers.start(300);
    await eventually('three unfenced brokers', async () => {
      const c = await admin.describeCluster();
      if (c.brokers.filter((b) => !b.fenced).length !== 3) throw new Error(JSON.stringify(c.brokers));
    });
  });

  afterEach(async function () {
    brokers?.stop();
    for (const a of admins.splice(0)) await a.close();
    await admin?.close();
    if (this.currentTest?.state === 'failed') {
      for (const id of cluster.nodes.keys()) console.error(`--- controller ${id} log tail ---\n${cluster.logOf(id).split('\n').slice(-30).join('\n')}`);
    }
    await cluster?.shutdown();
  });

  it('elects a new leader that accepts writes after kill -9 of the leader', async () => {
    await admin.createTopic({ name: 'before-kill', partitions: 3, replicationFactor: 3 });
    const { leaderId: old, term } = await leaderOf(admin);
    await cluster.kill(old, 'SIGKILL');
    const survivors = cluster.bootstrap().filter((a) => a !== cluster.addressOf(old));
    const a2 = adminFor(survivors);
    admins.push(a2);
    const next = await eventually('a new leader', async () => {
      const l = await leaderOf(a2);
      if (l.leaderId === old || l.term <= term) throw new Error(`still ${l.leaderId}@${l.term}`);
      return l;
    });
    expect(next.leaderId).to.not.equal(old);
    await a2.createTopic({ name: 'after-kill', partitions: 1, replicationFactor: 2 });
    expect(await a2.listTopics()).to.include.members(['before-kill', 'after-kill']);
  });

  it('catches up a follower restarted with an empty data dir by snapshot', async () => {
    for (let i = 0; i < 30; i++) await admin.createTopic({ name: `snap-${i}`, partitions: 1, replicationFactor: 1 });
    const { leaderId } = await leaderOf(admin);
    const follower = [...cluster.nodes.keys()].find((id) => id !== leaderId)!;
    await cluster.restart(follower, { wipe: true });
    const local = adminOnly(follower);
    const leaderView = await admin.describeQuorum();
    const caughtUp = await eventually('the wiped follower to catch up', async () => {
      const q = await local.describeQuorum();
      if (q.servedBy !== follower || q.appliedIndex < leaderView.commitIndex) throw new Error(`applied ${q.appliedIndex} < ${leaderView.commitIndex}`);
      return q;
    });
    // Its log starts after a snapshot: it could not have replayed the compacted prefix.
    expect(caughtUp.snapshotIndex).to.be.greaterThan(0);
    // Make it the leader: everything it serves now came through that snapshot.
    await admin.transferLeadership(follower);
    await eventually('leadership to move', async () => {
      const l = await leaderOf(local);
      if (l.leaderId !== follower) throw new Error(`leader is ${l.leaderId}`);
    });
    const topics = await local.listTopics();
    for (let i = 0; i < 30; i++) expect(topics).to.include(`snap-${i}`);
  });

  it('keeps every committed topic when all three controllers are killed and restarted', async () => {
    const names = ['durable-a', 'durable-b', 'durable-c'];
    for (const name of names) await admin.createTopic({ name, partitions: 2, replicationFactor: 3, configs: { 'retention.ms': '60000' } });
    for (const id of cluster.nodes.keys()) await cluster.kill(id, 'SIGKILL');
    for (const id of cluster.nodes.keys()) cluster.spawn(id);
    await eventually('a leader after the restart', () => leaderOf(admin), { timeoutMs: 30_000 });
    const described = await eventually('topics after the restart', () => admin.describeTopics(names), { timeoutMs: 30_000 });
    expect(described.map((t) => t.name).sort()).to.deep.equal(names);
    for (const t of described) {
      expect(t.partitions).to.have.length(2);
      expect(t.configs['retention.ms']).to.equal('60000');
    }
  });

  it('makes a SIGSTOPped leader step down on resume without committing anything conflicting', async () => {
    await admin.createTopic({ name: 'before-pause', partitions: 1, replicationFactor: 3 });
    const { leaderId: old, term } = await leaderOf(admin);
    cluster.pause(old);
    const others = [...cluster.nodes.keys()].filter((id) => id !== old);
    const a2 = adminFor(others.map((id) => cluster.addressOf(id)));
    admins.push(a2);
    await eventually('a new leader while the old one is stopped', async () => {
      const l = await leaderOf(a2);
      if (l.leaderId === old || l.term <= term) throw new Error(`still ${l.leaderId}@${l.term}`);
    });
    await a2.createTopic({ name: 'during-pause', partitions: 1, replicationFactor: 2 });
    cluster.resume(old);
    const oldView = adminOnly(old);
    const q = await eventually('the resumed leader to follow the new term', async () => {
      const s = await oldView.describeQuorum();
      if (s.servedBy !== old || s.leaderId === old || s.term <= term) throw new Error(`old leader reports ${s.leaderId}@${s.term}`);
      return s;
    });
    expect(q.leaderId).to.not.equal(old);
    // All three processes are alive (a Raft invariant violation would have crashed one)
    // and converge on one committed history.
    for (const id of cluster.nodes.keys()) expect(cluster.isRunning(id), `controller ${id} running`).to.equal(true);
    await eventually('every controller to apply the same commit index', async () => {
      const views = await Promise.all([...cluster.nodes.keys()].map((id) => adminOnly(id).describeQuorum()));
      const applied = new Set(views.map((v) => v.appliedIndex));
      if (applied.size !== 1) throw new Error(`applied indexes differ: ${[...applied]}`);
    });
    expect(await a2.listTopics()).to.include.members(['before-pause', 'during-pause']);
  });

  it('creates a topic through a follower (forwarded to the active controller)', async () => {
    const { leaderId } = await leaderOf(admin);
    const follower = [...cluster.nodes.keys()].find((id) => id !== leaderId)!;
    const viaFollower = adminOnly(follower);
    const created = await viaFollower.createTopic({ name: 'via-follower', partitions: 4, replicationFactor: 3 });
    expect(created.partitions).to.have.length(4);
    for (const p of created.partitions) expect(p.replicas).to.have.length(3);
    expect(await admin.listTopics()).to.include('via-follower');
  });

  it('refuses bad input with typed errors and creates nothing', async () => {
    const attempts: [object, string][] = [
      [{ name: 'bad name!', partitions: 1, replicationFactor: 1 }, 'INVALID_TOPIC_NAME'],
      [{ name: '..', partitions: 1, replicationFactor: 1 }, 'INVALID_TOPIC_NAME'],
      [{ name: 'zero-parts', partitions: 0, replicationFactor: 1 }, 'INVALID_PARTITIONS'],
      [{ name: 'too-many-replicas', partitions: 1, replicationFactor: 4 }, 'INVALID_REPLICATION_FACTOR'],
      [{ name: 'bad-config', partitions: 1, replicationFactor: 1, configs: { 'retention.ms': 'soon' } }, 'INVALID_CONFIG'],
      [{ name: 'bad-isr', partitions: 1, replicationFactor: 2, configs: { 'min.insync.replicas': '3' } }, 'INVALID_CONFIG'],
    ];
    for (const [req, code] of attempts) {
      let err: any;
      try {
        await admin.createTopic(req as any);
      } catch (e) {
        err = e;
      }
      expect(err, `expected ${code}`).to.exist;
      expect(err.name).to.equal(code);
    }
    const topics = await admin.listTopics();
    expect(topics.filter((t) => ['zero-parts', 'too-many-replicas', 'bad-config', 'bad-isr'].includes(t))).to.deep.equal([]);
  });

  it('explains a fenced broker in events and in topic descriptions, via the CLI', async () => {
    await admin.createTopic({ name: 'explained', partitions: 3, replicationFactor: 3 });
    // Stop heartbeating for broker 3 only: the controller must fence it after the session timeout.
    brokers.silence(3);
    {
      const env = { ...process.env, FLOTILLA_BOOTSTRAP: cluster.bootstrap().join(',') };
      const events = await eventually('a fencing event', async () => {
        const { stdout } = await run(process.execPath, [CLI, 'events', '--json'], { env });
        const list = JSON.parse(stdout) as { text: string }[];
        const hit = list.find((e) => /broker 3 fenced: no heartbeat for \d+ ms/.test(e.text));
        if (!hit) throw new Error(`no fencing event yet: ${stdout.slice(0, 500)}`);
        return list;
      }, { timeoutMs: 30_000, intervalMs: 500 });
      expect(events.length).to.be.greaterThan(0);
      const { stdout } = await run(process.execPath, [CLI, 'topics', 'describe', 'explained', '--json'], { env });
      const [topic] = JSON.parse(stdout);
      for (const p of topic.partitions) {
        expect(p.isr).to.not.include(3);
        expect(p.leader).to.not.equal(3);
        expect(p.status).to.equal('under-replicated');
        expect(p.why).to.match(/3/);
      }
      const q = JSON.parse((await run(process.execPath, [CLI, 'quorum', 'status', '--json'], { env })).stdout);
      expect(q.leaderId).to.be.within(1, 3);
      expect(q.term).to.be.greaterThan(0);
    }
  });
});
