// A deterministic cluster simulator for the pure Raft core, in the manner of
// TigerBeetle's VOPR (src/vopr.zig) and Kafka's RaftEventSimulationTest: real RaftNodes,
// a simulated driver with stable storage, an in-memory network that delays, drops,
// duplicates, reorders and partitions, crashes that lose whatever was not persisted, a
// client workload, and the invariants of checker.ts checked after every event. After the
// fault phase everything heals and a leader must commit a fresh proposal (liveness).
//
// Everything random comes from one Prng built from the seed, so a seed replays exactly:
//   node dist/test/sim/run-sim.js --seed S [--trace]

import {
  ConfChange,
  ConfChangeType,
  ConfState,
  DEFAULT_RAFT_LIMITS,
  Entry,
  EntryType,
  HardState,
  Message,
  MessageType,
  NodeId,
  RaftConfig,
  RaftNode,
  RaftRefusedError,
  RaftStorageState,
  Ready,
  Snapshot,
  StateRole,
  decodeConfChange,
  isReplicationMessage,
} from '../../controller/raft';
import { Checker, InvariantViolation, LogView, confKey, dataKey, describeEntry, entryKey, violation } from './checker';
import { Prng } from './prng';

/** Simulated time units per Raft tick. Message delays are drawn in these units. */
export const TICK_UNITS = 10;
export const ELECTION_TIMEOUT_TICKS = 10;
/** The fault phase of a default run, in ticks (the CLI and the mocha test use it). */
export const DEFAULT_FAULT_TICKS = 300;
/**
 * After healing, a leader must commit a fresh proposal within this many ticks, plus one
 * round trip per message's worth of backlog when the flow-control limits are small ...
 */
export const LIVENESS_COMMIT_TICKS = 10 * ELECTION_TIMEOUT_TICKS;
/** ... and every live member must apply it within this many more (same allowance). */
export const LIVENESS_CONVERGE_TICKS = 10 * ELECTION_TIMEOUT_TICKS;
/**
 * A client stops proposing to a leader with this many uncommitted entries (a real client
 * bounds its outstanding requests). Without it a leader limited to one entry per message
 * builds a backlog faster than it can replicate it.
 */
export const CLIENT_MAX_BACKLOG = 32;
/** A client keeps at most this many proposals unacknowledged (it gives up on one after CLIENT_GIVE_UP_TICKS). */
export const CLIENT_MAX_OUTSTANDING = 32;
export const CLIENT_GIVE_UP_TICKS = 5 * ELECTION_TIMEOUT_TICKS;
/** The last trace lines a failure prints. */
export const TRACE_TAIL = 50;
/** Bound on the nodes running at once (members, learners, spares). */
const MAX_RUNNING_NODES = 7;
/** Bound on events per run: a core that loops forever fails instead of hanging. */
const MAX_EVENTS = 2_000_000;

/**
 * Deliberately broken drivers, used only to prove that the harness catches real bugs
 * (a checker that cannot fail is worthless).
 */
export type DriverBug =
  /** On restart, the persisted vote is forgotten: a node can vote twice in one term. */
  | 'forget-vote'
  /** Messages leave before the Ready is persisted, and a crash loses the last Ready's writes. */
  | 'send-before-persist';

export interface SimOptions {
  readonly faultTicks?: number;
  /** Called with every trace line as it happens (--trace). */
  readonly onTrace?: (line: string) => void;
  readonly driverBug?: DriverBug;
}

/** The knobs one seed draws; printed with a failure. */
export interface SimParams {
  readonly voters: number;
  readonly initialLearner: boolean;
  readonly heartbeatTimeoutTicks: number;
  readonly maxEntriesPerMsg: number;
  readonly maxBytesPerMsg: number;
  readonly maxInflightMsgs: number;
  readonly maxUncommittedBytes: number;
  readonly maxCommittedEntriesPerReady: number;
  readonly dropRate: number;
  readonly dupRate: number;
  readonly maxDelayUnits: number;
  readonly longDelayRate: number;
  readonly readyDelayUnits: number;
  readonly tickSkew: boolean;
  readonly compactEvery: number;
  readonly crashRate: number;
  readonly maxDownTicks: number;
  readonly midReadyCrashRate: number;
  readonly partitionRate: number;
  readonly proposeRate: number;
  readonly readRate: number;
  readonly transferRate: number;
  readonly confChangeRate: number;
  readonly campaignRate: number;
}

export function paramsForSeed(rng: Prng): SimParams {
  const small = rng.chance(0.35);
  // Fault density swings widely between seeds (as in VOPR): calm seeds exercise long runs
  // of normal replication, stormy ones crash, cut and lose messages every few ticks.
  const level = rng.pick(['calm', 'normal', 'normal', 'storm'] as const);
  const storm = level === 'storm';
  const calm = level === 'calm';
  return {
    // One voter now and then: the leader is its own quorum, so the paths where it commits on
    // its own fsync alone (and the growth 1 -> 2 -> 3 by promotion) are exercised too.
    voters: rng.pick([1, 3, 3, 3, 3, 5, 5, 5, 5]),
    initialLearner: rng.chance(0.25),
    heartbeatTimeoutTicks: rng.range(1, 2),
    maxEntriesPerMsg: small ? rng.range(1, 4) : DEFAULT_RAFT_LIMITS.maxEntriesPerMsg,
    maxBytesPerMsg: small && rng.chance(0.5) ? rng.range(8, 40) : DEFAULT_RAFT_LIMITS.maxBytesPerMsg,
    maxInflightMsgs: small ? rng.range(1, 4) : DEFAULT_RAFT_LIMITS.maxInflightMsgs,
    maxUncommittedBytes: small && rng.chance(0.5) ? rng.range(40, 200) : DEFAULT_RAFT_LIMITS.maxUncommittedBytes,
    maxCommittedEntriesPerReady: small && rng.chance(0.5) ? rng.range(1, 5) : DEFAULT_RAFT_LIMITS.maxCommittedEntriesPerReady,
    dropRate: calm ? 0 : storm ? rng.pick([0.1, 0.2, 0.3]) : rng.pick([0, 0.02, 0.05, 0.1]),
    dupRate: calm ? 0 : rng.pick([0, 0.02, 0.05, 0.1]),
    maxDelayUnits: rng.range(2, 25),
    longDelayRate: calm ? 0 : rng.pick([0, 0.005, 0.02]),
    // Now and then a slow disk: many steps batch up into one Ready.
    readyDelayUnits: rng.chance(0.15) ? rng.range(10, 30) : rng.range(0, 6),
    tickSkew: rng.chance(0.3),
    compactEvery: rng.range(3, 40),
    crashRate: calm ? 0 : storm ? rng.pick([0.05, 0.1]) : rng.pick([0, 0.005, 0.01, 0.02]),
    maxDownTicks: storm ? rng.range(2, 20) : rng.range(3, 60),
    midReadyCrashRate: calm ? 0 : storm ? rng.pick([0.005, 0.02]) : rng.pick([0, 0.001, 0.003]),
    partitionRate: calm ? 0 : storm ? rng.pick([0.03, 0.06]) : rng.pick([0, 0.005, 0.01, 0.03]),
    proposeRate: rng.pick([0.2, 0.5, 1]),
    readRate: rng.pick([0.05, 0.2]),
    transferRate: rng.pick([0, 0.005, 0.02]),
    confChangeRate: rng.pick([0, 0.01, 0.03, 0.06]),
    campaignRate: rng.pick([0, 0.002, 0.01]),
  };
}

export interface SimStats {
  events: number;
  ticks: number;
  messagesSent: number;
  busyHeartbeats: number;
  messagesDelivered: number;
  leaders: number;
  committed: number;
  proposals: number;
  acked: number;
  readsServed: number;
  snapshotsInstalled: number;
  compactions: number;
  crashes: number;
  /** Leaders crashed after sending Appends early and before their fsync. */
  crashesBeforeFsync: number;
  partitions: number;
  confChanges: number;
  /** Readies that overwrote stored entries: divergent logs were reconciled. */
  truncations: number;
  transfers: number;
  refusals: Record<string, number>;
  livenessTicks: number;
}

export class SimFailure extends Error {
  constructor(
    readonly seed: number,
    readonly invariant: string,
    readonly detail: string,
    readonly traceTail: readonly string[],
    readonly replay: string,
    readonly params: SimParams,
  ) {
    super(
      [
        `simulation failed: seed ${seed}: ${invariant}: ${detail}`,
        `params: ${JSON.stringify(params)}`,
        `last ${traceTail.length} events:`,
        ...traceTail.map((l) => `  ${l}`),
        `replay: ${replay}`,
        `(add --trace to print every event)`,
      ].join('\n'),
    );
  }
}

export const DRIVER_BUGS: readonly DriverBug[] = ['forget-vote', 'send-before-persist'];

/** The one command that replays a run (add --trace to print every event). */
export function replayCommand(seed: number, faultTicks: number, driverBug?: DriverBug): string {
  const ticks = faultTicks === DEFAULT_FAULT_TICKS ? '' : ` --ticks ${faultTicks}`;
  const bug = driverBug ? ` --driver-bug ${driverBug}` : '';
  return `node dist/test/sim/run-sim.js --seed ${seed}${ticks}${bug}`;
}

// ---------------------------------------------------------------- storage and state machine

/** What the simulated driver has on stable storage: exactly what the Ready contract persisted. */
class SimStorage {
  hardState: HardState = { term: 0, vote: 0, commit: 0 };
  snapshot: Snapshot | undefined;
  /** Entries after the snapshot, contiguous. */
  entries: Entry[] = [];

  snapIndex(): number {
    return this.snapshot?.metadata.index ?? 0;
  }

  snapTerm(): number {
    return this.snapshot?.metadata.term ?? 0;
  }

  lastIndex(): number {
    return this.snapIndex() + this.entries.length;
  }

  term(index: number): number | undefined {
    if (index === this.snapIndex()) return this.snapTerm();
    return this.entry(index)?.term;
  }

  entry(index: number): Entry | undefined {
    if (index <= this.snapIndex()) return undefined;
    return this.entries[index - this.snapIndex() - 1];
  }

  view(): LogView {
    return { snapIndex: this.snapIndex(), snapTerm: this.snapTerm(), entries: this.entries };
  }

  toStorageState(initialConfState: ConfState): RaftStorageState {
    return {
      hardState: this.hardState,
      snapshot: this.snapshot,
      entries: [...this.entries],
      initialConfState,
      applied: this.snapIndex(),
    };
  }
}

/** FNV-1a over a string, continuing from `h`. */
function fnv(h: number, s: string): number {
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

const FNV_OFFSET = 0x811c9dc5;

function applyConf(c: ConfState, cc: ConfChange): ConfState {
  const voters = c.voters.filter((v) => v !== cc.nodeId);
  const learners = c.learners.filter((v) => v !== cc.nodeId);
  if (cc.type === ConfChangeType.AddVoter) voters.push(cc.nodeId);
  if (cc.type === ConfChangeType.AddLearner) learners.push(cc.nodeId);
  return { voters: voters.sort((a, b) => a - b), learners: learners.sort((a, b) => a - b) };
}

/**
 * The application: a hash chain over every applied entry, plus the membership the
 * applied ConfChanges describe. Volatile: a crash loses it, a restart rebuilds it from
 * the snapshot and the committed entries Raft hands out again.
 */
class StateMachine {
  constructor(
    public applied: number,
    public hash: number,
    public conf: ConfState,
    public payloads: number,
  ) {}

  apply(e: Entry): void {
    this.applied = e.index;
    this.hash = fnv(this.hash, `${e.index}|${entryKey(e)};`);
    if (e.type === EntryType.ConfChange) this.conf = applyConf(this.conf, decodeConfChange(e.data));
    else if (e.data.length > 0) this.payloads++;
  }

  encode(): Uint8Array {
    return Buffer.from(JSON.stringify({ applied: this.applied, hash: this.hash, conf: this.conf, payloads: this.payloads }));
  }

  static decode(data: Uint8Array): StateMachine {
    const o = JSON.parse(Buffer.from(data).toString('utf8')) as { applied: number; hash: number; conf: ConfState; payloads: number };
    return new StateMachine(o.applied, o.hash, o.conf, o.payloads);
  }
}

// ---------------------------------------------------------------- nodes and events

type NodeState = 'up' | 'down' | 'gone';

class SimNode {
  raft: RaftNode | undefined;
  sm: StateMachine | undefined;
  state: NodeState = 'up';
  /** Bumped on every crash and restart; events of an older incarnation are stale. */
  incarnation = 0;
  readonly storage = new SimStorage();
  readyScheduled = false;
  /** Commit and applied last observed in this incarnation (monotonic). */
  lastCommit = 0;
  lastApplied = 0;
  lastRole: StateRole = StateRole.Follower;
  lastTerm = 0;
  /** Term in which it was last seen leading (leader completeness is checked on entry). */
  ledTerm = -1;
  /** Read states waiting until the state machine catches up to their index. */
  pendingReads: { ctx: string; index: number }[] = [];
  /** Removal from the membership is committed: it will be shut down for good. */
  removed = false;
  tickUnits = TICK_UNITS;
  /** What the last Ready persisted (for the 'send-before-persist' driver bug). */
  lastWrite: { entries: Entry[]; hardStateBefore: HardState } | undefined;

  constructor(readonly id: NodeId) {}
}

type SimEvent =
  | { readonly k: 'tick'; readonly node: NodeId; readonly inc: number }
  | { readonly k: 'ready'; readonly node: NodeId; readonly inc: number }
  | { readonly k: 'deliver'; readonly m: Message }
  | { readonly k: 'nemesis' }
  | { readonly k: 'client' }
  | { readonly k: 'restart'; readonly node: NodeId; readonly inc: number }
  | { readonly k: 'crash'; readonly node: NodeId; readonly inc: number; readonly why: string }
  | { readonly k: 'heal-links'; readonly links: readonly number[] }
  | { readonly k: 'decommission'; readonly node: NodeId }
  | { readonly k: 'heal' };

interface Scheduled {
  readonly t: number;
  readonly seq: number;
  readonly ev: SimEvent;
}

/** A binary min-heap on (time, sequence): ties run in scheduling order. */
class EventQueue {
  private heap: Scheduled[] = [];
  private seq = 0;

  get size(): number {
    return this.heap.length;
  }

  push(t: number, ev: SimEvent): void {
    const h = this.heap;
    h.push({ t, seq: this.seq++, ev });
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!less(h[i], h[p])) break;
      [h[i], h[p]] = [h[p], h[i]];
      i = p;
    }
  }

  pop(): Scheduled | undefined {
    const h = this.heap;
    if (h.length === 0) return undefined;
    const top = h[0];
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && less(h[l], h[m])) m = l;
        if (r < h.length && less(h[r], h[m])) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return top;
  }
}

function less(a: Scheduled, b: Scheduled): boolean {
  return a.t < b.t || (a.t === b.t && a.seq < b.seq);
}

function linkKey(from: NodeId, to: NodeId): number {
  return from * 1024 + to;
}

export function fmtMessage(m: Message): string {
  const head = `${m.type} n${m.from}->n${m.to} t${m.term}`;
  switch (m.type) {
    case MessageType.Append: {
      const n = m.entries.length;
      const range = n === 0 ? '' : ` [${m.entries[0].index}..${m.entries[n - 1].index}]`;
      return `${head} prev=${m.index}/t${m.logTerm} n=${n}${range} commit=${m.commit}`;
    }
    case MessageType.AppendResp:
      return m.reject ? `${head} REJECT index=${m.index} hint=${m.rejectHint}/t${m.logTerm}` : `${head} index=${m.index}`;
    case MessageType.Vote:
    case MessageType.PreVote:
      return `${head} last=${m.index}/t${m.logTerm}${m.context ? ` ctx=${m.context}` : ''}`;
    case MessageType.VoteResp:
    case MessageType.PreVoteResp:
      return `${head} ${m.reject ? 'REJECT' : 'grant'}`;
    case MessageType.Heartbeat:
      return `${head} commit=${m.commit}${m.context ? ` ctx=${m.context}` : ''}`;
    case MessageType.HeartbeatResp:
      return `${head}${m.context ? ` ctx=${m.context}` : ''}`;
    case MessageType.InstallSnapshot:
      return `${head} snap=${m.snapshot?.metadata.index}/t${m.snapshot?.metadata.term} ${m.snapshot ? confKey(m.snapshot.metadata.confState) : ''}`;
    case MessageType.ReadIndex:
      return `${head} ctx=${m.context}`;
    case MessageType.ReadIndexResp:
      return `${head} index=${m.index} ctx=${m.context}`;
    default:
      return head;
  }
}

function sameConf(a: ConfState, b: ConfState): boolean {
  return confKey(a) === confKey(b);
}

// ---------------------------------------------------------------- the simulation

export class Simulation {
  readonly params: SimParams;
  readonly stats: SimStats = {
    events: 0,
    ticks: 0,
    messagesSent: 0,
    busyHeartbeats: 0,
    messagesDelivered: 0,
    leaders: 0,
    committed: 0,
    proposals: 0,
    acked: 0,
    readsServed: 0,
    snapshotsInstalled: 0,
    compactions: 0,
    crashes: 0,
    crashesBeforeFsync: 0,
    partitions: 0,
    confChanges: 0,
    truncations: 0,
    transfers: 0,
    refusals: {},
    livenessTicks: 0,
  };

  private readonly rng: Prng;
  private readonly queue = new EventQueue();
  private readonly checker = new Checker();
  private readonly nodes = new Map<NodeId, SimNode>();
  private readonly bootstrapConf: ConfState;
  private readonly faultTicks: number;
  private now = 0;
  private nextNodeId: number;
  private readonly maxNodeId: number;
  /** Directed links currently cut, with a count so that overlapping partitions compose. */
  private readonly cut = new Map<number, number>();
  private healed = false;
  private healedAt = 0;
  /** Extra ticks the liveness bounds allow for replicating the backlog at heal time. */
  private backlogAllowanceTicks = 0;
  /** Extra ticks for applying what is committed, when few entries are applied per Ready. */
  private applyAllowanceTicks = 0;

  private payloadSeq = 0;
  private readSeq = 0;
  /** payload -> where the proposal was accepted (to acknowledge it when applied). */
  private readonly proposals = new Map<string, { node: NodeId; index: number; term: number; at: number }>();
  /** The freshest state machine anywhere: its membership is the committed one. */
  private furthest: StateMachine;

  // Liveness probes, after healing: one per leader term until one commits.
  private probes: { payload: string; node: NodeId; index: number; term: number }[] = [];
  private probeIndex = 0;
  private probeCommittedAt = 0;
  private done = false;

  private readonly ring: string[] = [];
  private ringPos = 0;

  constructor(
    readonly seed: number,
    private readonly options: SimOptions = {},
  ) {
    this.rng = new Prng(seed);
    this.params = paramsForSeed(this.rng);
    this.faultTicks = options.faultTicks ?? DEFAULT_FAULT_TICKS;
    const voters: NodeId[] = [];
    for (let i = 1; i <= this.params.voters; i++) voters.push(i);
    const learners: NodeId[] = this.params.initialLearner ? [this.params.voters + 1] : [];
    this.bootstrapConf = { voters, learners };
    this.furthest = new StateMachine(0, FNV_OFFSET, this.bootstrapConf, 0);
    this.nextNodeId = voters.length + learners.length + 1;
    this.maxNodeId = this.nextNodeId + 20;
  }

  /** Run to completion; throws SimFailure on any violated invariant. */
  run(): SimStats {
    try {
      this.start();
      while (!this.done) {
        const s = this.queue.pop();
        if (s === undefined) violation('liveness', 'event queue ran dry');
        this.now = s.t;
        if (++this.stats.events > MAX_EVENTS) violation('liveness', `more than ${MAX_EVENTS} events`);
        this.handle(s.ev);
      }
    } catch (e) {
      throw this.failure(e);
    }
    this.stats.leaders = this.checker.leaders();
    this.stats.committed = this.checker.committedCount();
    return this.stats;
  }

  private failure(e: unknown): SimFailure {
    if (e instanceof SimFailure) return e;
    let invariant: string;
    let detail: string;
    if (e instanceof InvariantViolation) {
      invariant = e.invariant;
      detail = e.detail;
    } else {
      invariant = 'core threw';
      detail = e instanceof Error ? (e.stack ?? e.message) : String(e);
    }
    const tail = this.ring.length < TRACE_TAIL ? [...this.ring] : [...this.ring.slice(this.ringPos), ...this.ring.slice(0, this.ringPos)];
    return new SimFailure(this.seed, invariant, detail, tail, replayCommand(this.seed, this.faultTicks, this.options.driverBug), this.params);
  }

  private trace(line: string): void {
    const l = `[${(this.now / TICK_UNITS).toFixed(1).padStart(6)}] ${line}`;
    if (this.options.onTrace) this.options.onTrace(l);
    if (this.ring.length < TRACE_TAIL) this.ring.push(l);
    else {
      this.ring[this.ringPos] = l;
      this.ringPos = (this.ringPos + 1) % TRACE_TAIL;
    }
  }

  private at(delayUnits: number, ev: SimEvent): void {
    this.queue.push(this.now + delayUnits, ev);
  }

  // ------------------------------------------------------------ lifecycle

  private start(): void {
    this.trace(`seed ${this.seed} params ${JSON.stringify(this.params)}`);
    this.trace(`bootstrap ${confKey(this.bootstrapConf)}`);
    for (const id of [...this.bootstrapConf.voters, ...this.bootstrapConf.learners]) this.createNode(id);
    this.at(this.rng.int(TICK_UNITS), { k: 'nemesis' });
    this.at(this.rng.int(TICK_UNITS), { k: 'client' });
    this.at(this.faultTicks * TICK_UNITS, { k: 'heal' });
  }

  private createNode(id: NodeId): SimNode {
    const n = new SimNode(id);
    if (this.params.tickSkew) n.tickUnits = TICK_UNITS + this.rng.range(-2, 2);
    this.nodes.set(id, n);
    this.boot(n);
    this.trace(`n${id} created`);
    return n;
  }

  private raftConfig(id: NodeId): RaftConfig {
    const rand = this.rng.fork();
    const p = this.params;
    return {
      id,
      electionTimeoutTicks: ELECTION_TIMEOUT_TICKS,
      heartbeatTimeoutTicks: p.heartbeatTimeoutTicks,
      random: () => rand.next(),
      preVote: true,
      checkQuorum: true,
      maxEntriesPerMsg: p.maxEntriesPerMsg,
      maxBytesPerMsg: p.maxBytesPerMsg,
      maxInflightMsgs: p.maxInflightMsgs,
      maxUncommittedBytes: p.maxUncommittedBytes,
      maxCommittedEntriesPerReady: p.maxCommittedEntriesPerReady,
    };
  }

  /** (Re)start a node from its stable storage. */
  private boot(n: SimNode): void {
    n.incarnation++;
    n.state = 'up';
    n.readyScheduled = false;
    n.pendingReads = [];
    n.ledTerm = -1;
    if (this.options.driverBug === 'forget-vote' && n.storage.hardState.vote !== 0) {
      n.storage.hardState = { ...n.storage.hardState, vote: 0 };
    }
    const st = n.storage.toStorageState(this.bootstrapConf);
    n.raft = new RaftNode(this.raftConfig(n.id), st);
    const snap = n.storage.snapshot;
    n.sm = snap ? StateMachine.decode(snap.data) : new StateMachine(0, FNV_OFFSET, this.bootstrapConf, 0);
    const s = n.raft.status();
    if (s.commit < n.storage.hardState.commit) violation('commit monotonic', `n${n.id} restarted with commit ${s.commit} below its persisted ${n.storage.hardState.commit}`);
    if (s.term !== n.storage.hardState.term) violation('api contract', `n${n.id} restarted in term ${s.term}, persisted ${n.storage.hardState.term}`);
    n.lastCommit = s.commit;
    n.lastApplied = s.applied;
    n.lastRole = s.role;
    n.lastTerm = s.term;
    this.at(this.rng.int(n.tickUnits) + 1, { k: 'tick', node: n.id, inc: n.incarnation });
    this.afterNode(n);
  }

  private crash(n: SimNode, why: string): void {
    if (n.state !== 'up') return;
    n.state = why === 'decommissioned' ? 'gone' : 'down';
    n.raft = undefined;
    n.sm = undefined;
    n.incarnation++;
    n.readyScheduled = false;
    n.pendingReads = [];
    if (this.options.driverBug === 'send-before-persist' && n.lastWrite) {
      // The last Ready's writes were never fsynced.
      const w = n.lastWrite;
      if (w.entries.length > 0) {
        const first = w.entries[0].index;
        if (first > n.storage.snapIndex()) n.storage.entries.length = Math.max(0, first - n.storage.snapIndex() - 1);
      }
      n.storage.hardState = w.hardStateBefore;
    }
    n.lastWrite = undefined;
    this.checker.onCrash(n.id);
    this.stats.crashes++;
    this.trace(`n${n.id} CRASH (${why}); persisted ${this.describeStorage(n)}`);
  }

  private describeStorage(n: SimNode): string {
    const hs = n.storage.hardState;
    return `hs=t${hs.term}/v${hs.vote}/c${hs.commit} snap=${n.storage.snapIndex()}/t${n.storage.snapTerm()} last=${n.storage.lastIndex()}`;
  }

  // ------------------------------------------------------------ events

  private handle(ev: SimEvent): void {
    switch (ev.k) {
      case 'tick':
        return this.onTick(ev.node, ev.inc);
      case 'ready':
        return this.onReady(ev.node, ev.inc);
      case 'deliver':
        return this.onDeliver(ev.m);
      case 'nemesis':
        return this.onNemesis();
      case 'client':
        return this.onClient();
      case 'restart':
        return this.onRestart(ev.node, ev.inc);
      case 'crash': {
        const n = this.live(ev.node, ev.inc);
        if (n && !this.healed) {
          this.crash(n, ev.why);
          this.scheduleRestart(n);
        }
        return;
      }
      case 'heal-links':
        return this.onHealLinks(ev.links);
      case 'decommission':
        return this.onDecommission(ev.node);
      case 'heal':
        return this.onHeal();
    }
  }

  private live(id: NodeId, inc?: number): SimNode | undefined {
    const n = this.nodes.get(id);
    if (!n || n.state !== 'up' || (inc !== undefined && n.incarnation !== inc)) return undefined;
    return n;
  }

  private onTick(id: NodeId, inc: number): void {
    const n = this.live(id, inc);
    if (!n) return;
    this.stats.ticks++;
    n.raft!.tick();
    this.at(n.tickUnits, { k: 'tick', node: id, inc });
    // The real driver keeps a leader heartbeating while a Ready is being written, once the
    // leader's term is durable (RaftNode.heartbeatsWhileBusy): send those extra heartbeats
    // at such moments too, so the invariants are checked with them in flight.
    if (n.readyScheduled && n.raft!.status().role === StateRole.Leader && n.raft!.status().term === n.storage.hardState.term && this.rng.chance(0.5)) {
      for (const m of n.raft!.heartbeatsWhileBusy()) this.send(n, m);
      this.stats.busyHeartbeats++;
    }
    this.afterNode(n, 'tick');
  }

  private onDeliver(m: Message): void {
    const n = this.live(m.to);
    if (!n) {
      this.trace(`drop (n${m.to} down) ${fmtMessage(m)}`);
      return;
    }
    if (this.isCut(m.from, m.to)) {
      this.trace(`drop (cut) ${fmtMessage(m)}`);
      return;
    }
    this.stats.messagesDelivered++;
    n.raft!.step(m);
    this.afterNode(n, `recv ${fmtMessage(m)}`);
    if (m.type === MessageType.Append && m.entries.length > 0) this.checkInMemoryLog(n);
  }

  /** Check the node after anything touched it, and schedule its Ready processing. */
  private afterNode(n: SimNode, what?: string): void {
    const raft = n.raft!;
    const s = raft.status();
    if (what !== undefined && (what !== 'tick' || s.role !== n.lastRole || s.term !== n.lastTerm)) {
      this.trace(`n${n.id} ${what} => ${s.role} t${s.term} commit=${s.commit} last=${s.lastIndex}`);
    }
    // Commit index is monotonic within an incarnation and never below what was persisted.
    if (s.commit < n.lastCommit) violation('commit monotonic', `n${n.id} commit went from ${n.lastCommit} to ${s.commit}`);
    if (s.commit < n.storage.hardState.commit) violation('commit monotonic', `n${n.id} commit ${s.commit} is below its persisted commit ${n.storage.hardState.commit}`);
    if (s.applied < n.lastApplied) violation('commit monotonic', `n${n.id} applied went from ${n.lastApplied} to ${s.applied}`);
    if (s.applied > s.commit) violation('api contract', `n${n.id} applied ${s.applied} beyond commit ${s.commit}`);
    if (s.commit > s.lastIndex) violation('api contract', `n${n.id} commit ${s.commit} beyond last index ${s.lastIndex}`);
    if (s.term < n.storage.hardState.term) violation('vote safety', `n${n.id} term ${s.term} below its persisted term ${n.storage.hardState.term}`);
    n.lastCommit = s.commit;
    n.lastApplied = s.applied;
    n.lastRole = s.role;
    n.lastTerm = s.term;
    this.checker.onCommitIndex(s.commit);
    if (s.role === StateRole.Leader) {
      this.checker.onLeader(s.term, n.id);
      if (n.ledTerm !== s.term) {
        n.ledTerm = s.term;
        this.trace(`n${n.id} is LEADER of term ${s.term} (${confKey(s.confState)}, last=${s.lastIndex} commit=${s.commit})`);
        const log = this.memLog(n);
        this.checker.onLog(`n${n.id}(mem)`, log);
        this.checker.checkLeaderLog(n.id, s.term, log, 'all');
      }
    }
    this.checkLeadersHaveFresh();
    if (!n.readyScheduled && raft.hasReady()) {
      n.readyScheduled = true;
      this.at(this.rng.int(this.params.readyDelayUnits + 1), { k: 'ready', node: n.id, inc: n.incarnation });
    }
  }

  /** Leader completeness for entries that became committed while a leader leads. */
  private checkLeadersHaveFresh(): void {
    const fresh = this.checker.takeFresh();
    if (fresh.length === 0) return;
    for (const n of this.nodes.values()) {
      if (n.state !== 'up') continue;
      const s = n.raft!.status();
      if (s.role !== StateRole.Leader) continue;
      this.checker.checkLeaderLog(n.id, s.term, this.memLog(n), fresh);
    }
  }

  /** The node's whole in-memory log (the core exposes it to tests as logEntries()). */
  private memLog(n: SimNode): LogView {
    const raft = n.raft!;
    const s = raft.status();
    const withLog = raft as unknown as { logEntries?: () => Entry[] };
    if (typeof withLog.logEntries === 'function') {
      const snapTerm = s.snapshotIndex === n.storage.snapIndex() ? n.storage.snapTerm() : undefined;
      return { snapIndex: s.snapshotIndex, snapTerm, entries: withLog.logEntries() };
    }
    return n.storage.view();
  }

  private checkInMemoryLog(n: SimNode): void {
    this.checker.onLog(`n${n.id}(mem)`, this.memLog(n));
  }

  // ------------------------------------------------------------ the driver: Ready processing

  private onReady(id: NodeId, inc: number): void {
    const n = this.live(id, inc);
    if (!n) return;
    n.readyScheduled = false;
    const raft = n.raft!;
    if (!raft.hasReady()) return;
    const rd = raft.ready();
    this.trace(`n${id} ready ${this.describeReady(rd)}`);
    const by = `n${id}`;
    const bug = this.options.driverBug;

    if (bug === 'send-before-persist') {
      for (const m of rd.messages) this.send(n, m);
    }
    // Step 2's exception: a leader's Appends and Heartbeats may leave before its fsync. Model
    // the worst case too: the leader crashes after sending them and before its fsync, losing
    // the entries it just replicated.
    const early = bug !== 'send-before-persist' && rd.replicateBeforePersist;
    if (early) {
      for (const m of rd.messages) if (isReplicationMessage(m)) this.send(n, m);
      if (!this.healed && this.rng.chance(this.params.midReadyCrashRate)) {
        this.stats.crashesBeforeFsync++;
        this.crash(n, `after sending its appends, before its fsync (${rd.entries.length} entries lost)`);
        this.scheduleRestart(n);
        return;
      }
    }

    // 1. Persist: snapshot (replacing the whole stored log), entries, hard state; one fsync.
    const st = n.storage;
    const hsBefore = st.hardState;
    if (rd.snapshot) {
      const meta = rd.snapshot.metadata;
      if (meta.index <= st.snapIndex()) violation('ready contract', `${by} Ready snapshot ${meta.index} not after the stored snapshot ${st.snapIndex()}`);
      const sm = StateMachine.decode(rd.snapshot.data);
      this.checkSnapshot(by, rd.snapshot, sm);
      st.snapshot = rd.snapshot;
      st.entries = [];
    }
    if (rd.entries.length > 0) {
      const first = rd.entries[0].index;
      if (first <= st.snapIndex() || first > st.lastIndex() + 1) {
        violation('ready contract', `${by} Ready entries start at ${first}, stored log is (${st.snapIndex()}, ${st.lastIndex()}]`);
      }
      for (const e of rd.entries) {
        if (e.index <= st.hardState.commit) {
          const old = st.entry(e.index);
          if (!old || entryKey(old) !== entryKey(e)) {
            violation('ready contract', `${by} overwrites committed ${old ? describeEntry(old) : e.index} with ${describeEntry(e)} (persisted commit ${st.hardState.commit})`);
          }
        }
      }
      this.checker.onLogSegment(`${by}(disk)`, first - 1, st.term(first - 1), rd.entries);
      if (first <= st.lastIndex()) {
        const old = st.entry(first)!;
        if (entryKey(old) !== entryKey(rd.entries[0])) {
          this.stats.truncations++;
          this.trace(`${by} truncates its log at ${first}: ${describeEntry(old)} replaced by ${describeEntry(rd.entries[0])}`);
        }
      }
      st.entries.length = first - st.snapIndex() - 1;
      st.entries.push(...rd.entries);
    }
    if (rd.hardState) {
      const hs = rd.hardState;
      this.checker.onPersistHardState(n.id, st.hardState, hs);
      if (hs.commit > st.lastIndex()) violation('ready contract', `${by} persists commit ${hs.commit} beyond its persisted log (last ${st.lastIndex()})`);
      const prevCommit = st.hardState.commit;
      st.hardState = hs;
      // Everything up to the persisted commit index is committed.
      for (let i = Math.max(prevCommit, st.snapIndex()) + 1; i <= hs.commit; i++) this.checker.onCommitted(by, st.entry(i)!, hs.term);
    }
    if (st.hardState.commit < st.snapIndex()) violation('ready contract', `${by} persisted commit ${st.hardState.commit} is below its snapshot ${st.snapIndex()}`);
    n.lastWrite = { entries: [...rd.entries], hardStateBefore: hsBefore };

    // 2. Only then send. A crash may strike between the fsync and the last send.
    if (bug !== 'send-before-persist') {
      const crashMid = !this.healed && this.rng.chance(this.params.midReadyCrashRate);
      const rest = early ? rd.messages.filter((m) => !isReplicationMessage(m)) : rd.messages;
      const sendCount = crashMid ? this.rng.int(rest.length + 1) : rest.length;
      for (let i = 0; i < sendCount; i++) this.send(n, rest[i]);
      if (crashMid) {
        this.crash(n, `after persisting, ${sendCount}/${rest.length} messages sent`);
        this.scheduleRestart(n);
        return;
      }
    }

    // 3. Apply the snapshot, then the committed entries; serve reads.
    const sm = n.sm!;
    if (rd.snapshot) {
      const restored = StateMachine.decode(rd.snapshot.data);
      if (restored.applied < sm.applied) violation('ready contract', `${by} snapshot ${restored.applied} behind its applied ${sm.applied}`);
      n.sm = restored;
      this.stats.snapshotsInstalled++;
      this.noteFurthest(restored);
    }
    for (const e of rd.committedEntries) this.applyEntry(n, e);
    for (const rs of rd.readStates) {
      this.checker.onReadState(n.id, rs.requestCtx, rs.index);
      n.pendingReads.push({ ctx: rs.requestCtx, index: rs.index });
    }
    this.serveReads(n);

    // 4. Advance, then maybe compact.
    raft.advance(rd);
    this.maybeCompact(n);
    if (this.rng.chance(0.05)) this.checkEntriesApi(n);
    this.afterNode(n);
  }

  private describeReady(rd: Ready): string {
    const parts: string[] = [];
    if (rd.softState) parts.push(`soft=${rd.softState.role}/lead${rd.softState.leaderId}`);
    if (rd.hardState) parts.push(`hs=t${rd.hardState.term}/v${rd.hardState.vote}/c${rd.hardState.commit}`);
    if (rd.snapshot) parts.push(`snap=${rd.snapshot.metadata.index}/t${rd.snapshot.metadata.term}`);
    if (rd.entries.length) parts.push(`persist=[${rd.entries[0].index}..${rd.entries[rd.entries.length - 1].index}]`);
    if (rd.committedEntries.length) parts.push(`apply=[${rd.committedEntries.map(describeEntry).join(', ')}]`);
    if (rd.messages.length) parts.push(`msgs=${rd.messages.length}`);
    if (rd.readStates.length) parts.push(`reads=[${rd.readStates.map((r) => `${r.requestCtx}@${r.index}`).join(',')}]`);
    return parts.join(' ');
  }

  private checkSnapshot(by: string, snap: Snapshot, sm: StateMachine): void {
    const meta = snap.metadata;
    if (sm.applied !== meta.index) violation('snapshot safety', `${by} snapshot ${meta.index} holds state applied through ${sm.applied}`);
    if (!sameConf(sm.conf, meta.confState)) {
      violation('snapshot safety', `${by} snapshot ${meta.index} carries ${confKey(meta.confState)}, the committed membership there is ${confKey(sm.conf)}`);
    }
    this.checker.onSnapshot(by, meta.index, meta.term, sm.hash);
  }

  private applyEntry(n: SimNode, e: Entry): void {
    const by = `n${n.id}`;
    const sm = n.sm!;
    if (e.index !== sm.applied + 1) violation('ready contract', `${by} handed ${describeEntry(e)} to apply after applying ${sm.applied}`);
    if (e.index > n.storage.hardState.commit) violation('ready contract', `${by} applies ${describeEntry(e)} beyond its persisted commit ${n.storage.hardState.commit}`);
    const stored = n.storage.entry(e.index);
    if (!stored || entryKey(stored) !== entryKey(e)) violation('ready contract', `${by} applies ${describeEntry(e)} but has ${stored ? describeEntry(stored) : 'nothing'} on disk there`);
    sm.apply(e);
    this.checker.onApply(by, e, sm.hash, n.lastTerm);
    this.noteFurthest(sm);
    if (e.type === EntryType.Normal && e.data.length > 0) {
      const p = dataKey(e.data);
      const prop = this.proposals.get(p);
      if (prop !== undefined) {
        this.proposals.delete(p);
        this.checker.onAck(e.index);
        this.stats.acked++;
      }
    } else if (e.type === EntryType.ConfChange) {
      const cc = decodeConfChange(e.data);
      if (cc.type === ConfChangeType.RemoveNode) {
        const target = this.nodes.get(cc.nodeId);
        if (target && !target.removed) {
          target.removed = true;
          this.at(this.rng.int(30 * TICK_UNITS), { k: 'decommission', node: cc.nodeId });
        }
      }
    }
  }

  private noteFurthest(sm: StateMachine): void {
    if (sm.applied > this.furthest.applied) {
      const f = this.furthest;
      const prev = f.conf;
      this.furthest = new StateMachine(sm.applied, sm.hash, sm.conf, sm.payloads);
      if (!sameConf(prev, sm.conf)) {
        this.stats.confChanges++;
        this.trace(`membership committed: ${confKey(sm.conf)}`);
      }
    }
  }

  private serveReads(n: SimNode): void {
    const sm = n.sm!;
    const waiting: { ctx: string; index: number }[] = [];
    for (const r of n.pendingReads) {
      if (sm.applied >= r.index) this.stats.readsServed++;
      else waiting.push(r);
    }
    n.pendingReads = waiting;
  }

  private maybeCompact(n: SimNode): void {
    const sm = n.sm!;
    const st = n.storage;
    if (sm.applied - st.snapIndex() < this.params.compactEvery) return;
    const snap = n.raft!.compact(sm.applied, sm.encode());
    const by = `n${n.id}`;
    if (snap.metadata.index !== sm.applied) violation('api contract', `${by} compact(${sm.applied}) returned a snapshot at ${snap.metadata.index}`);
    if (snap.metadata.term !== st.term(sm.applied)) violation('snapshot safety', `${by} compact(${sm.applied}) says term ${snap.metadata.term}, its log says ${st.term(sm.applied)}`);
    this.checkSnapshot(by, snap, sm);
    st.entries = st.entries.slice(snap.metadata.index - st.snapIndex());
    st.snapshot = snap;
    this.stats.compactions++;
    this.trace(`${by} compacted through ${snap.metadata.index}/t${snap.metadata.term}`);
  }

  /** entries(lo, hi) returns committed, applied entries that agree with the committed log. */
  private checkEntriesApi(n: SimNode): void {
    const s = n.raft!.status();
    if (s.applied <= s.snapshotIndex) return;
    const lo = this.rng.range(s.snapshotIndex + 1, s.applied);
    const hi = lo + this.rng.int(6);
    const got = n.raft!.entries(lo, hi);
    if (got === undefined) violation('api contract', `n${n.id} entries(${lo}, ${hi}) is undefined though ${lo} is after the snapshot ${s.snapshotIndex}`);
    const want = Math.min(hi, s.applied) - lo + 1;
    if (got.length !== want) violation('api contract', `n${n.id} entries(${lo}, ${hi}) returned ${got.length} entries, applied is ${s.applied}`);
    got.forEach((e, i) => {
      if (e.index !== lo + i) violation('api contract', `n${n.id} entries(${lo}, ${hi}) returned index ${e.index} at position ${i}`);
      this.checker.onCommitted(`n${n.id}.entries()`, e, s.term);
    });
  }

  // ------------------------------------------------------------ network

  private isCut(from: NodeId, to: NodeId): boolean {
    return (this.cut.get(linkKey(from, to)) ?? 0) > 0;
  }

  private send(n: SimNode, m: Message): void {
    if (m.from !== n.id) violation('api contract', `n${n.id} emitted a message from n${m.from}: ${fmtMessage(m)}`);
    if (m.type === MessageType.Append) this.checker.onLogSegment(`n${n.id}(Append)`, m.index, m.logTerm, m.entries);
    if (m.type === MessageType.InstallSnapshot && m.snapshot) this.checker.onSnapshot(`n${n.id}(InstallSnapshot)`, m.snapshot.metadata.index, m.snapshot.metadata.term, undefined);
    this.stats.messagesSent++;
    if (!this.nodes.has(m.to)) return;
    if (this.isCut(m.from, m.to)) return;
    if (!this.healed && this.rng.chance(this.params.dropRate)) return;
    const copies = !this.healed && this.rng.chance(this.params.dupRate) ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      const long = !this.healed && this.rng.chance(this.params.longDelayRate);
      const delay = long ? this.rng.range(this.params.maxDelayUnits, 10 * TICK_UNITS) : this.rng.range(1, this.params.maxDelayUnits);
      this.at(delay, { k: 'deliver', m });
    }
  }

  private cutLinks(links: number[], ticks: number, what: string): void {
    for (const l of links) this.cut.set(l, (this.cut.get(l) ?? 0) + 1);
    this.stats.partitions++;
    this.trace(`PARTITION ${what} for ${ticks} ticks`);
    this.at(ticks * TICK_UNITS, { k: 'heal-links', links });
  }

  private onHealLinks(links: readonly number[]): void {
    if (this.healed) return;
    for (const l of links) {
      const c = (this.cut.get(l) ?? 0) - 1;
      if (c > 0) this.cut.set(l, c);
      else this.cut.delete(l);
    }
    this.trace(`partition healed (${links.length} links)`);
  }

  // ------------------------------------------------------------ faults

  private onNemesis(): void {
    if (this.healed) return;
    this.at(TICK_UNITS, { k: 'nemesis' });
    const p = this.params;
    if (this.rng.chance(p.crashRate)) {
      const up = [...this.nodes.values()].filter((n) => n.state === 'up');
      if (up.length > 0) {
        const n = this.rng.pick(up);
        this.crash(n, 'nemesis');
        this.scheduleRestart(n);
      }
    }
    if (this.rng.chance(p.partitionRate)) this.partition();
  }

  private scheduleRestart(n: SimNode): void {
    this.at(this.rng.range(1, this.params.maxDownTicks) * TICK_UNITS, { k: 'restart', node: n.id, inc: n.incarnation });
  }

  private onRestart(id: NodeId, inc: number): void {
    const n = this.nodes.get(id);
    if (!n || n.state !== 'down' || n.incarnation !== inc) return;
    this.trace(`n${id} RESTART from ${this.describeStorage(n)}`);
    this.boot(n);
  }

  private partition(): void {
    const ids = [...this.nodes.values()].filter((n) => n.state !== 'gone').map((n) => n.id);
    if (ids.length < 2) return;
    const ticks = this.rng.range(3, 60);
    const links: number[] = [];
    const both = (a: NodeId, b: NodeId): void => {
      links.push(linkKey(a, b), linkKey(b, a));
    };
    const leader = this.currentLeader();
    const kind = this.rng.int(5);
    if (kind === 0 || (kind === 4 && !leader)) {
      const x = this.rng.pick(ids);
      for (const y of ids) if (y !== x) both(x, y);
      this.cutLinks(links, ticks, `isolate n${x}`);
    } else if (kind === 1) {
      const shuffled = this.rng.shuffle([...ids]);
      const k = this.rng.range(1, shuffled.length - 1);
      const a = shuffled.slice(0, k);
      const b = shuffled.slice(k);
      for (const x of a) for (const y of b) both(x, y);
      this.cutLinks(links, ticks, `split {${a.map((x) => `n${x}`)}} | {${b.map((x) => `n${x}`)}}`);
    } else if (kind === 2) {
      const x = this.rng.pick(ids);
      const outbound = this.rng.chance(0.5);
      for (const y of ids) if (y !== x) links.push(outbound ? linkKey(x, y) : linkKey(y, x));
      this.cutLinks(links, ticks, `one-way: n${x} ${outbound ? 'cannot send' : 'cannot receive'}`);
    } else if (kind === 3) {
      const count = this.rng.range(1, ids.length);
      const desc: string[] = [];
      for (let i = 0; i < count; i++) {
        const [a, b] = this.rng.shuffle([...ids]);
        links.push(linkKey(a, b));
        desc.push(`n${a}->n${b}`);
      }
      this.cutLinks(links, ticks, `one-way links ${desc.join(' ')}`);
    } else {
      const x = leader!.id;
      const mode = this.rng.int(3);
      for (const y of ids) {
        if (y === x) continue;
        if (mode !== 2) links.push(linkKey(x, y));
        if (mode !== 1) links.push(linkKey(y, x));
      }
      this.cutLinks(links, ticks, `leader n${x} ${['isolated', 'cannot send', 'cannot receive'][mode]}`);
    }
  }

  private onDecommission(id: NodeId): void {
    const n = this.nodes.get(id);
    if (!n || n.state === 'gone') return;
    if (n.state === 'down') {
      n.state = 'gone';
      n.incarnation++;
      this.trace(`n${id} decommissioned while down`);
      return;
    }
    this.crash(n, 'decommissioned');
  }

  private onHeal(): void {
    this.healed = true;
    this.healedAt = this.now;
    this.cut.clear();
    for (const n of this.nodes.values()) {
      if (n.state === 'down') {
        this.trace(`n${n.id} RESTART (heal) from ${this.describeStorage(n)}`);
        this.boot(n);
      }
    }
    // With one entry per message and one message in flight, replication is one entry per
    // round trip: allow a round trip per message's worth of entries not yet committed, and
    // of the log a lagging member may need besides (it gets a snapshot for the rest).
    let last = 0;
    for (const n of this.nodes.values()) if (n.state === 'up') last = Math.max(last, n.raft!.status().lastIndex);
    const backlog = Math.max(0, last - this.checker.maxCommit) + this.params.compactEvery;
    const p = this.params;
    const perMsg = Math.max(1, Math.min(p.maxEntriesPerMsg, Math.floor(p.maxBytesPerMsg / 8)));
    const rttTicks = Math.ceil((2 * p.maxDelayUnits + 2 * p.readyDelayUnits) / TICK_UNITS) + p.heartbeatTimeoutTicks;
    this.backlogAllowanceTicks = perMsg >= 32 ? 0 : Math.ceil(backlog / perMsg) * rttTicks;
    let minApplied = Infinity;
    for (const n of this.nodes.values()) if (n.state === 'up') minApplied = Math.min(minApplied, n.sm!.applied);
    const applyBacklog = Math.max(0, last - minApplied);
    const readyTicks = Math.ceil(p.readyDelayUnits / TICK_UNITS) + 1;
    this.applyAllowanceTicks = p.maxCommittedEntriesPerReady >= 32 ? 0 : Math.ceil(applyBacklog / p.maxCommittedEntriesPerReady) * readyTicks;
    this.trace(
      `HEAL: no more faults; a leader must commit a fresh proposal within ${LIVENESS_COMMIT_TICKS + this.backlogAllowanceTicks} ticks ` +
        `(backlog allowance ${this.backlogAllowanceTicks}, apply allowance ${this.applyAllowanceTicks})`,
    );
  }

  // ------------------------------------------------------------ client workload

  private currentLeader(): SimNode | undefined {
    let best: SimNode | undefined;
    let bestTerm = -1;
    for (const n of this.nodes.values()) {
      if (n.state !== 'up') continue;
      const s = n.raft!.status();
      if (s.role === StateRole.Leader && s.term > bestTerm) {
        best = n;
        bestTerm = s.term;
      }
    }
    return best;
  }

  private upNodes(): SimNode[] {
    return [...this.nodes.values()].filter((n) => n.state === 'up');
  }

  private refused(e: unknown, n: SimNode, what: string): void {
    if (!(e instanceof RaftRefusedError)) throw e;
    this.stats.refusals[e.refusal] = (this.stats.refusals[e.refusal] ?? 0) + 1;
    const s = n.raft!.status();
    if (e.refusal === 'NOT_LEADER' && s.role === StateRole.Leader) violation('api contract', `leader n${n.id} refused ${what} as NOT_LEADER`);
    this.trace(`n${n.id} refused ${what}: ${e.refusal} (${e.message})`);
  }

  private onClient(): void {
    if (this.healed) {
      this.livenessStep();
      if (!this.done) this.at(TICK_UNITS, { k: 'client' });
      return;
    }
    this.at(TICK_UNITS, { k: 'client' });
    const p = this.params;
    if (this.rng.chance(p.proposeRate)) this.propose();
    if (this.rng.chance(p.proposeRate / 2)) this.propose();
    if (this.rng.chance(p.readRate)) this.read();
    if (this.rng.chance(p.transferRate)) this.transfer();
    if (this.rng.chance(p.confChangeRate)) this.changeMembership();
    if (this.rng.chance(p.campaignRate)) {
      const up = this.upNodes();
      if (up.length > 0) {
        const n = this.rng.pick(up);
        n.raft!.campaign();
        this.afterNode(n, 'campaign()');
      }
    }
  }

  /** Propose a unique payload; returns it if the node accepted it. */
  private propose(target?: SimNode, payload?: string): string | undefined {
    const leader = this.currentLeader();
    let n = target;
    if (!n) {
      const up = this.upNodes();
      if (up.length === 0) return undefined;
      n = leader && this.rng.chance(0.85) ? leader : this.rng.pick(up);
      if (n === leader) {
        const s = leader.raft!.status();
        if (s.lastIndex - s.commit >= CLIENT_MAX_BACKLOG || this.outstanding() >= CLIENT_MAX_OUTSTANDING) return undefined;
      }
    }
    const p = payload ?? `v${++this.payloadSeq}`;
    this.stats.proposals++;
    const raft = n.raft!;
    try {
      const r = raft.propose(Buffer.from(p, 'latin1'));
      const s = raft.status();
      if (s.role !== StateRole.Leader || r.term !== s.term || r.index !== s.lastIndex) {
        violation('api contract', `n${n.id} accepted ${p} at ${r.index}/t${r.term} but is ${s.role} in term ${s.term} with last index ${s.lastIndex}`);
      }
      this.proposals.set(p, { node: n.id, index: r.index, term: r.term, at: this.now });
      this.afterNode(n, `propose ${JSON.stringify(p)} -> ${r.index}/t${r.term}`);
      this.checkInMemoryLog(n);
      return p;
    } catch (e) {
      this.refused(e, n, `propose ${JSON.stringify(p)}`);
      this.afterNode(n);
      return undefined;
    }
  }

  /** Proposals not yet acknowledged, forgetting those the client gave up on. */
  private outstanding(): number {
    const giveUp = this.now - CLIENT_GIVE_UP_TICKS * TICK_UNITS;
    for (const [p, x] of this.proposals) {
      if (x.at < giveUp) this.proposals.delete(p);
    }
    return this.proposals.size;
  }

  private read(): void {
    const up = this.upNodes();
    if (up.length === 0) return;
    const leader = this.currentLeader();
    const n = leader && this.rng.chance(0.5) ? leader : this.rng.pick(up);
    const ctx = `r${++this.readSeq}@n${n.id}`;
    try {
      this.checker.onReadRequested(ctx, n.id);
      n.raft!.readIndex(ctx);
      this.afterNode(n, `readIndex ${ctx}`);
    } catch (e) {
      this.refused(e, n, `readIndex ${ctx}`);
      this.afterNode(n);
    }
  }

  private transfer(): void {
    const leader = this.currentLeader();
    if (!leader) return;
    const voters = leader.raft!.status().confState.voters.filter((v) => v !== leader.id);
    if (voters.length === 0) return;
    const to = this.rng.pick(voters);
    try {
      leader.raft!.transferLeadership(to);
      this.stats.transfers++;
      this.afterNode(leader, `transferLeadership(n${to})`);
    } catch (e) {
      this.refused(e, leader, `transferLeadership(n${to})`);
      this.afterNode(leader);
    }
  }

  /** Add a learner, promote a caught-up one, or remove a member; keep at least 3 voters. */
  private changeMembership(): void {
    const leader = this.currentLeader();
    if (!leader) return;
    const s = leader.raft!.status();
    const conf = s.confState;
    const options: (() => ConfChange | undefined)[] = [];
    const members = new Set([...conf.voters, ...conf.learners]);
    if (conf.learners.length > 0) {
      // Promote, possibly before it caught up (LEARNER_NOT_CAUGHT_UP is a normal outcome).
      options.push(() => ({ type: ConfChangeType.AddVoter, nodeId: this.rng.pick(conf.learners) }));
      options.push(() => ({ type: ConfChangeType.RemoveNode, nodeId: this.rng.pick(conf.learners) }));
    }
    if (conf.voters.length > 3) {
      options.push(() => {
        // Removing the leader itself exercises stepping down after the change commits (§4.2.2).
        const others = conf.voters.filter((v) => v !== leader.id);
        const id = this.rng.chance(0.3) ? leader.id : this.rng.pick(others);
        return { type: ConfChangeType.RemoveNode, nodeId: id };
      });
    }
    options.push(() => {
      // Reuse a node that was started for an earlier, never committed addition; else start one.
      const spare = [...this.nodes.values()].find((n) => n.state !== 'gone' && !n.removed && !members.has(n.id) && !this.furthest.conf.voters.includes(n.id) && !this.furthest.conf.learners.includes(n.id));
      if (spare) return { type: ConfChangeType.AddLearner, nodeId: spare.id };
      const running = [...this.nodes.values()].filter((n) => n.state !== 'gone' && !n.removed).length;
      if (this.nextNodeId > this.maxNodeId || running >= MAX_RUNNING_NODES) return undefined;
      const n = this.createNode(this.nextNodeId++);
      return { type: ConfChangeType.AddLearner, nodeId: n.id };
    });
    const cc = this.rng.pick(options)();
    if (!cc) return;
    const what = `proposeConfChange(${ConfChangeType[cc.type]} n${cc.nodeId})`;
    const raft = leader.raft!;
    const commitBefore = s.commit;
    try {
      const r = raft.proposeConfChange(cc);
      this.afterNode(leader, `${what} -> ${r.index}/t${r.term}`);
      // Reconfiguration bugs hide in the window before the change commits. Either crash
      // the leader inside it (sometimes before it persisted the entry), or let the entry
      // out but no acknowledgement in, so that the leader steps down (check-quorum) and
      // the next election runs with the change uncommitted.
      if (this.params.crashRate > 0 && this.rng.chance(0.15)) {
        this.at(this.rng.int(2 * TICK_UNITS), { k: 'crash', node: leader.id, inc: leader.incarnation, why: `leader right after ${what}` });
      } else if (this.params.partitionRate > 0 && this.rng.chance(0.15)) {
        const ids = [...this.nodes.values()].filter((x) => x.state !== 'gone' && x.id !== leader.id).map((x) => linkKey(x.id, leader.id));
        this.cutLinks(ids, this.rng.range(15, 40), `leader n${leader.id} cannot receive, right after ${what}`);
      }
      // Single-server changes are safe only one at a time (thesis §4.1): every earlier
      // ConfChange in the leader's log must have been committed before this one.
      const log = this.memLog(leader);
      for (const e of log.entries) {
        if (e.type === EntryType.ConfChange && e.index < r.index && e.index > commitBefore) {
          violation('single pending reconfiguration', `n${leader.id} accepted ${what} at ${r.index} while ${describeEntry(e)} was uncommitted (commit ${commitBefore})`);
        }
      }
      this.checker.onLog(`n${leader.id}(mem)`, log);
    } catch (e) {
      this.refused(e, leader, what);
      this.afterNode(leader);
    }
  }

  // ------------------------------------------------------------ liveness

  /** After healing: a leader must emerge and commit a fresh proposal, then everyone applies it. */
  private livenessStep(): void {
    const elapsed = (this.now - this.healedAt) / TICK_UNITS;
    if (this.probeIndex === 0) {
      for (const pr of this.probes) {
        if (this.checker.committedKey(pr.index) === `${pr.term}|${EntryType.Normal}|${pr.payload}`) {
          this.probeIndex = pr.index;
          this.probeCommittedAt = this.now;
          this.trace(`liveness: probe ${pr.payload} committed at ${pr.index} after ${Math.round(elapsed)} ticks`);
        }
      }
    }
    if (this.probeIndex === 0) {
      const bound = LIVENESS_COMMIT_TICKS + this.backlogAllowanceTicks;
      if (elapsed > bound) {
        violation('liveness', `no leader committed a fresh proposal within ${bound} ticks of healing; ${this.describeCluster()}`);
      }
      const leader = this.currentLeader();
      if (!leader) return;
      const s = leader.raft!.status();
      if (this.probes.some((pr) => pr.node === leader.id && pr.term === s.term)) return;
      const payload = `probe-${++this.payloadSeq}`;
      if (this.propose(leader, payload) !== undefined) {
        const pr = this.proposals.get(payload)!;
        this.probes.push({ payload, node: leader.id, index: pr.index, term: pr.term });
      }
      return;
    }
    const members = [...this.furthest.conf.voters, ...this.furthest.conf.learners];
    const behind = members.filter((id) => {
      const n = this.nodes.get(id);
      return n !== undefined && n.state === 'up' && n.sm!.applied < this.probeIndex;
    });
    if (behind.length === 0) {
      this.stats.livenessTicks = Math.round(elapsed);
      this.trace(`liveness: probe at ${this.probeIndex} applied by every member after ${Math.round(elapsed)} ticks`);
      this.done = true;
      return;
    }
    const bound = LIVENESS_CONVERGE_TICKS + this.backlogAllowanceTicks + this.applyAllowanceTicks;
    if ((this.now - this.probeCommittedAt) / TICK_UNITS > bound) {
      violation('liveness', `members ${behind.map((x) => `n${x}`).join(',')} did not apply the probe at ${this.probeIndex} within ${bound} ticks of its commit; ${this.describeCluster()}`);
    }
  }

  private describeCluster(): string {
    const parts: string[] = [];
    for (const n of this.nodes.values()) {
      if (n.state !== 'up') {
        parts.push(`n${n.id}:${n.state}`);
        continue;
      }
      const s = n.raft!.status();
      parts.push(`n${n.id}:${s.role}/t${s.term}/lead${s.leaderId}/c${s.commit}/a${n.sm!.applied}/last${s.lastIndex}/snap${s.snapshotIndex} ${confKey(s.confState)}`);
    }
    return `committed ${confKey(this.furthest.conf)}; ${parts.join('; ')}`;
  }
}

/** Run one seed. Throws SimFailure. */
export function runSeed(seed: number, options: SimOptions = {}): SimStats {
  return new Simulation(seed, options).run();
}
