// Real RaftDrivers in one process: real level storage in temp dirs, real gRPC on
// 127.0.0.1, a toy state machine (a list of strings). Each test names the property it checks.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { RaftDriver, RaftDriverOptions, StateMachine } from '../../controller/raft-driver';
import { FlotillaError } from '../../shared/errors/error-codes';
import { SERVER_OPTIONS } from '../../shared/rpc/proto';

const TICK_MS = 20;

class ListStateMachine implements StateMachine {
  items: string[] = [];
  appliedIndex = 0;
  restoredFrom = 0;

  apply(index: number, _term: number, data: Uint8Array): void {
    expect(index).to.be.greaterThan(this.appliedIndex);
    this.appliedIndex = index;
    if (data.length > 0) this.items.push(Buffer.from(data).toString());
  }

  takeSnapshot(): Uint8Array {
    return Buffer.from(JSON.stringify(this.items));
  }

  restoreSnapshot(index: number, data: Uint8Array): void {
    this.items = data.length ? (JSON.parse(Buffer.from(data).toString()) as string[]) : [];
    this.appliedIndex = index;
    this.restoredFrom = index;
  }
}

interface TestNode {
  id: number;
  address: string;
  dataDir: string;
  server?: grpc.Server;
  driver?: RaftDriver;
  sm: ListStateMachine;
}

function bind(server: grpc.Server, address: string): Promise<number> {
  return new Promise((resolve, reject) => server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))));
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function rejection(p: Promise<unknown>): Promise<FlotillaError> {
  try {
    await p;
  } catch (e) {
    expect(e).to.be.instanceOf(FlotillaError);
    return e as FlotillaError;
  }
  throw new Error('expected a rejection');
}

class TestCluster {
  readonly nodes = new Map<number, TestNode>();
  readonly voters = new Map<number, string>();

  constructor(
    readonly root: string,
    private readonly extra: Partial<RaftDriverOptions> = {},
  ) {}

  static async start(size: number, extra: Partial<RaftDriverOptions> = {}): Promise<TestCluster> {
    const c = new TestCluster(fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-raft-driver-')), extra);
    // Bind first (port 0) so every driver can be given the full voter map.
    for (let id = 1; id <= size; id++) {
      const server = new grpc.Server(SERVER_OPTIONS);
      const port = await bind(server, '127.0.0.1:0');
      const node: TestNode = { id, address: `127.0.0.1:${port}`, dataDir: path.join(c.root, `c${id}`), server, sm: new ListStateMachine() };
      c.nodes.set(id, node);
      c.voters.set(id, node.address);
    }
    for (const id of c.nodes.keys()) await c.open(id);
    return c;
  }

  node(id: number): TestNode {
    return this.nodes.get(id)!;
  }

  driver(id: number): RaftDriver {
    return this.node(id).driver!;
  }

  running(): TestNode[] {
    return [...this.nodes.values()].filter((n) => n.driver);
  }

  async open(id: number, over: Partial<RaftDriverOptions> = {}): Promise<RaftDriver> {
    const n = this.node(id);
    if (!n.server) {
      n.server = new grpc.Server(SERVER_OPTIONS);
      await bind(n.server, n.address);
    }
    const logger = pino({ level: process.env.RAFT_TEST_LOG ?? 'silent' }).child({ nodeId: id });
    const driver = await RaftDriver.open(
      { nodeId: id, voters: this.voters, dataDir: n.dataDir, tickMs: TICK_MS, logger, ...this.extra, ...over },
      n.sm,
    );
    driver.registerService(n.server);
    driver.start();
    n.driver = driver;
    return driver;
  }

  async stopNode(id: number): Promise<void> {
    const n = this.node(id);
    await n.driver?.stop();
    n.driver = undefined;
    n.server?.forceShutdown();
    n.server = undefined;
  }

  /** Waits until every running node (but `ignore`) agrees on one leader that reports itself active. */
  async leader(ignore: number[] = [], timeoutMs = 10_000): Promise<number> {
    let leader = 0;
    await waitFor(
      'one agreed, active leader',
      () => {
        const ids = new Set(this.running().filter((n) => !ignore.includes(n.id)).map((n) => n.driver!.leaderId()));
        leader = [...ids][0];
        return ids.size === 1 && leader !== 0 && !!this.nodes.get(leader)?.driver?.isLeader();
      },
      timeoutMs,
    );
    return leader;
  }

  async stop(): Promise<void> {
    for (const id of this.nodes.keys()) await this.stopNode(id);
    fs.rmSync(this.root, { recursive: true, force: true });
  }
}

describe('raft-driver: a three-controller cluster over gRPC', function () {
  this.timeout(30_000);
  let c: TestCluster;

  before(async () => {
    c = await TestCluster.start(3);
  });

  after(async () => {
    await c?.stop();
  });

  it('elects exactly one leader, and only it reports isLeader()', async () => {
    const leader = await c.leader();
    const leaders = c.running().filter((n) => n.driver!.isLeader());
    expect(leaders.map((n) => n.id)).to.deep.equal([leader]);
    const terms = new Set(c.running().map((n) => n.driver!.term()));
    expect(terms.size).to.equal(1);
  });

  it('propose resolves on the leader after commit and the entry is applied on all three', async () => {
    const leader = await c.leader();
    const r = await c.driver(leader).propose(Buffer.from('one'));
    expect(r.term).to.equal(c.driver(leader).term());
    // Resolved means applied locally already.
    expect(c.node(leader).sm.items).to.include('one');
    expect(c.node(leader).sm.appliedIndex).to.be.at.least(r.index);
    await waitFor('applied everywhere', () => c.running().every((n) => n.sm.items.includes('one')));
  });

  it('many concurrent proposals all resolve, in log order (group commit)', async () => {
    const leader = await c.leader();
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => c.driver(leader).propose(Buffer.from(`batch-${i}`))));
    const indexes = results.map((r) => r.index);
    expect([...indexes].sort((a, b) => a - b)).to.deep.equal(indexes);
    await waitFor('batch applied everywhere', () => c.running().every((n) => n.sm.items.includes('batch-199')));
    const lists = c.running().map((n) => JSON.stringify(n.sm.items));
    expect(new Set(lists).size).to.equal(1);
  });

  it('propose on a follower rejects NOT_CONTROLLER naming the leader', async () => {
    const leader = await c.leader();
    const follower = c.running().find((n) => n.id !== leader)!;
    const err = await rejection(follower.driver!.propose(Buffer.from('nope')));
    expect(err.name).to.equal('NOT_CONTROLLER');
    expect(err.retriable).to.equal(true);
    expect(err.details.leaderId).to.equal(leader);
    expect(err.details.leaderAddress).to.equal(c.node(leader).address);
  });

  it('readIndex resolves on the leader at or after the last committed proposal, and rejects on a follower', async () => {
    const leader = await c.leader();
    const r = await c.driver(leader).propose(Buffer.from('before-read'));
    const readIndex = await c.driver(leader).readIndex();
    expect(readIndex).to.be.at.least(r.index);
    const follower = c.running().find((n) => n.id !== leader)!;
    expect((await rejection(follower.driver!.readIndex())).name).to.equal('NOT_CONTROLLER');
  });

  it('readCommitted returns the application entries, skipping no-ops, with where to continue', async () => {
    const leader = await c.leader();
    const d = c.driver(leader);
    const all = d.readCommitted(1, 10_000);
    if ('compacted' in all) throw new Error('unexpected compaction');
    expect(all.entries.map((e) => Buffer.from(e.data).toString())).to.deep.equal(c.node(leader).sm.items);
    expect(all.nextIndex).to.equal(d.quorumStatus().appliedIndex + 1);
    const two = d.readCommitted(1, 2);
    if ('compacted' in two) throw new Error('unexpected compaction');
    expect(two.entries).to.have.length(2);
    expect(two.nextIndex).to.equal(two.entries[1].index + 1);
  });

  it('quorumStatus on the leader lists three voters with their match index', async () => {
    const leader = await c.leader();
    await waitFor('followers caught up', () => c.driver(leader).quorumStatus().voters.every((v) => v.lag === 0));
    const s = c.driver(leader).quorumStatus();
    expect(s.leaderId).to.equal(leader);
    expect(s.voters.map((v) => v.id)).to.deep.equal([1, 2, 3]);
    expect(s.voters.map((v) => v.address)).to.deep.equal([1, 2, 3].map((id) => c.node(id).address));
    expect(s.learners).to.deep.equal([]);
    const follower = c.running().find((n) => n.id !== leader)!;
    expect(follower.driver!.quorumStatus().voters.every((v) => v.lag === -1)).to.equal(true);
  });

  it('transferLeadership moves leadership to the named voter', async () => {
    const leader = await c.leader();
    const target = c.running().find((n) => n.id !== leader)!.id;
    const seen: number[] = [];
    c.driver(target).onRoleChange((isLeader, leaderId) => isLeader && seen.push(leaderId));
    await c.driver(leader).transferLeadership(target);
    expect(await c.leader()).to.equal(target);
    expect(seen).to.deep.equal([target]);
  });

  it('after the leader stops, the other two elect a new leader that commits', async () => {
    const old = await c.leader();
    await c.stopNode(old);
    const leader = await c.leader();
    expect(leader).to.not.equal(old);
    await c.driver(leader).propose(Buffer.from('while-one-down'));
    await waitFor('applied on the two running', () => c.running().every((n) => n.sm.items.includes('while-one-down')));
  });

  it('a stopped controller restarted from its data dir catches up', async () => {
    const down = [...c.nodes.values()].find((n) => !n.driver)!;
    down.sm = new ListStateMachine();
    await c.open(down.id);
    // Its own log already holds the committed entries it had: they were re-applied in open().
    expect(down.sm.items).to.include('one');
    await waitFor('restarted node caught up', () => down.sm.items.includes('while-one-down'));
    const leader = await c.leader();
    await c.driver(leader).propose(Buffer.from('after-restart'));
    await waitFor('all three apply', () => c.running().length === 3 && c.running().every((n) => n.sm.items.includes('after-restart')));
    expect(new Set(c.running().map((n) => JSON.stringify(n.sm.items))).size).to.equal(1);
  });
});

describe('raft-driver: snapshots and membership', function () {
  this.timeout(45_000);
  let c: TestCluster;

  before(async () => {
    c = await TestCluster.start(3, { snapshotEveryEntries: 5 });
  });

  after(async () => {
    await c?.stop();
  });

  it('a wiped follower catches up from a snapshot', async () => {
    let leader = await c.leader();
    for (let i = 0; i < 20; i++) await c.driver(leader).propose(Buffer.from(`s${i}`));
    await waitFor('all applied', () => c.running().every((n) => n.sm.items.includes('s19')));
    const victim = c.running().find((n) => n.id !== leader)!;
    await c.stopNode(victim.id);
    fs.rmSync(victim.dataDir, { recursive: true, force: true });
    leader = await c.leader();
    for (let i = 20; i < 32; i++) await c.driver(leader).propose(Buffer.from(`s${i}`));
    expect(c.driver(leader).quorumStatus().snapshotIndex).to.be.greaterThan(0);

    victim.sm = new ListStateMachine();
    const d = await c.open(victim.id);
    await waitFor('wiped follower caught up', () => victim.sm.items.includes('s31'));
    expect(victim.sm.restoredFrom).to.be.greaterThan(0);
    expect(d.stats().snapshotsRestored).to.be.at.least(1);
    expect(victim.sm.items).to.deep.equal(c.node(leader).sm.items);
  });

  it('readCommitted below the snapshot reports compaction', async () => {
    const leader = await c.leader();
    const r = c.driver(leader).readCommitted(1, 10);
    expect(r).to.have.property('compacted', true);
    if ('compacted' in r) expect(r.snapshotIndex).to.be.greaterThan(0);
  });

  it('addController adds a joining controller as learner, then voter; its address survives restarts', async () => {
    const server = new grpc.Server(SERVER_OPTIONS);
    const port = await bind(server, '127.0.0.1:0');
    const id = 4;
    const node: TestNode = { id, address: `127.0.0.1:${port}`, dataDir: path.join(c.root, 'c4'), server, sm: new ListStateMachine() };
    c.nodes.set(id, node);
    // The joiner knows the existing voters (to reach the leader) but not itself as a voter.
    await c.open(id, { join: true, voters: new Map([...c.voters, [id, node.address]]) });

    // Not a member yet: it has heard from no leader.
    expect(c.driver(id).leaderId()).to.equal(0);
    let leader = await c.leader([id]);
    await c.driver(leader).addController(id, node.address);
    let s = c.driver(leader).quorumStatus();
    expect(s.voters.map((v) => v.id)).to.deep.equal([1, 2, 3, 4]);
    await waitFor('new controller applied everything', () => node.sm.items.includes('s31'));
    // The joiner learnt the founding voters from the log (bootstrap entries), not only itself:
    // otherwise it could count its own vote as a quorum.
    expect(c.driver(id).quorumStatus().voters.map((v) => v.id)).to.deep.equal([1, 2, 3, 4]);
    await c.driver(leader).transferLeadership(id);
    await waitFor('the joiner to lead', () => c.driver(id).isLeader());
    // The leader it replaced may still be catching up to the new term; retry a refused write.
    let written = false;
    for (let attempt = 0; attempt < 50 && !written; attempt++) {
      try {
        await c.driver(await c.leader()).propose(Buffer.from('led-by-joiner'));
        written = true;
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    expect(written, 'a write after the transfer').to.equal(true);
    await waitFor('every member applied the joiner\'s entry', () => c.running().every((n) => n.sm.items.includes('led-by-joiner')));

    // Every member learnt the address through the log; a restarted one still knows it.
    await waitFor('address replicated', () => c.running().every((n) => n.driver!.peerAddress(id) === node.address));
    const other = c.running().find((n) => n.id !== leader && n.id !== id)!;
    await c.stopNode(other.id);
    other.sm = new ListStateMachine();
    await c.open(other.id);
    expect(c.driver(other.id).peerAddress(id)).to.equal(node.address);

    // Remove the joiner, which now leads: it steps down once the removal commits (§4.2.2).
    leader = await c.leader();
    await c.driver(leader).removeController(id);
    leader = await c.leader([id]);
    s = c.driver(leader).quorumStatus();
    expect(s.voters.map((v) => v.id)).to.deep.equal([1, 2, 3]);
    await c.driver(leader).propose(Buffer.from('after-remove'));
  });
});

describe('raft-driver: leadership loss', function () {
  this.timeout(30_000);
  let c: TestCluster;

  before(async () => {
    c = await TestCluster.start(3);
  });

  after(async () => {
    await c?.stop();
  });

  it('a leader cut off from its quorum steps down and rejects its pending proposal', async () => {
    const leader = await c.leader();
    const roles: boolean[] = [];
    c.driver(leader).onRoleChange((isLeader) => roles.push(isLeader));
    for (const n of c.running()) if (n.id !== leader) await c.stopNode(n.id);
    const err = await rejection(c.driver(leader).propose(Buffer.from('lost')));
    expect(err.name).to.be.oneOf(['NOT_CONTROLLER', 'PROPOSAL_DROPPED']);
    expect(c.driver(leader).isLeader()).to.equal(false);
    expect(roles).to.include(false);
    expect(c.node(leader).sm.items).to.not.include('lost');
  });

  it('stop() rejects new requests with CONTROLLER_UNAVAILABLE', async () => {
    const id = c.running()[0].id;
    const d = c.driver(id);
    await c.stopNode(id);
    expect((await rejection(d.propose(Buffer.from('x')))).name).to.equal('CONTROLLER_UNAVAILABLE');
  });
});
