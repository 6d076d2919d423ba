// An interpreter for data-driven Raft scenarios, after etcd-io/raft's interaction_env
// (rafttest/interaction_env*.go). It plays the driver of controller/raft/ for a small
// in-memory cluster: it persists each Ready to a MemStorage, sends its messages into a
// network queue, applies committed entries to a toy state machine and calls advance().
// Nothing is delivered, ticked or processed unless a command says so, so every script
// is a deterministic, replayable schedule.
//
// Besides printing, the driver checks what it can see (STYLE.md "Simulate before you
// trust"): the Ready ordering contract of controller/raft/types.ts, one vote per term,
// one leader per term, committed entries never overwritten, that every node applies
// the same entry at the same index (State Machine Safety, thesis §3.6.3), and that a
// read index covers every entry known committed when the read was requested (§6.4).
// A broken check is printed as "!! VIOLATION" and recorded in `violations`;
// scenarios.test.ts fails on any, whatever the golden file says.
//
// Commands (ids are node ids; lists are written (1,2,3)):
//   add-nodes N [voters=(..)] [learners=(..)] [election=10] [heartbeat=1] [prevote=false]
//             [checkquorum=false] [seed=1] [max-entries-per-msg=..] [max-bytes-per-msg=..]
//             [max-inflight=..] [max-uncommitted-bytes=..] [max-committed-per-ready=..]
//       adds N nodes with the next free ids, empty logs, and `voters`/`learners` as the
//       bootstrap configuration (defaults: the new nodes as voters).
//   campaign ID                 start an election now (pre-vote first when enabled)
//   tick N ID...                N ticks
//   tick-heartbeat ID           one heartbeat timeout of ticks
//   tick-election ID            a leader: one election timeout of ticks; anyone else:
//                               ticks until it starts an election (at most 2x timeout;
//                               its previous Ready must have been handled)
//   process-ready ID...         handle one Ready each: persist, send, apply, advance
//   deliver-msgs ID... [from=(..)] [type=(..)]   step queued messages addressed to ID
//   deliver-msgs drop=(ID...)   drop every queued message addressed to these ids
//   drop-msgs ID... [from=(..)] [type=(..)]      drop matching queued messages
//   stabilize [ID...] [quiet=true]  repeat {every Ready; every delivery} until quiescent;
//                               quiet prints only a summary line (and any violation)
//   propose ID DATA [count=N]   N>1 proposes DATA1..DATAN
//   propose-conf-change ID add-learner=X | add-voter=X | remove=X
//   read-index ID CTX
//   transfer-leader FROM TO
//   isolate ID | cut FROM TO (one direction) | heal
//   crash ID | restart ID [wipe=true]  restart rebuilds the node from its MemStorage (wipe: from nothing)
//   compact ID INDEX            snapshot the state machine at INDEX, drop the log prefix
//   status ID                   the core's status, with the leader's progress per peer
//   log ID | app ID             what ID has persisted | what it has applied
//   raft-state                  one line per node
//   msg-counts [reset=true]    messages delivered since the last reset, per direction and type

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
  NO_NODE,
  RaftConfig,
  RaftNode,
  RaftRefusedError,
  RaftStorageState,
  Ready,
  Snapshot,
  StateRole,
  decodeConfChange,
} from '../../controller/raft';
import { seededRandom } from '../support/seeded-random';

// ---------------------------------------------------------------- formatting

const utf8 = new TextDecoder();

export function bytes(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

export function formatConfState(c: ConfState): string {
  const s = `voters=(${c.voters.join(',')})`;
  return c.learners.length > 0 ? `${s} learners=(${c.learners.join(',')})` : s;
}

function formatConfChange(cc: ConfChange): string {
  switch (cc.type) {
    case ConfChangeType.AddLearner:
      return `add-learner(${cc.nodeId})`;
    case ConfChangeType.AddVoter:
      return `add-voter(${cc.nodeId})`;
    case ConfChangeType.RemoveNode:
      return `remove(${cc.nodeId})`;
  }
}

/** `term/index` then the payload: "data", (empty) for the leader's no-op, or the change. */
export function formatEntry(e: Entry): string {
  const head = `${e.term}/${e.index}`;
  if (e.type === EntryType.ConfChange) {
    try {
      return `${head} ${formatConfChange(decodeConfChange(e.data))}`;
    } catch {
      return `${head} conf-change(malformed)`;
    }
  }
  return e.data.length === 0 ? `${head} (empty)` : `${head} ${JSON.stringify(utf8.decode(e.data))}`;
}

/**
 * Short lists in full; long ones as runs of one term, each run with its first and last
 * entry, so a divergent log reads as its shape ("2/5 "a" … 2/34 "z" (30 entries)").
 */
export function formatEntries(es: readonly Entry[], fullUpTo = 6): string {
  if (es.length <= fullUpTo) return es.map(formatEntry).join(', ');
  const out: string[] = [];
  let i = 0;
  while (i < es.length) {
    let j = i;
    while (j + 1 < es.length && es[j + 1].term === es[i].term) j++;
    const n = j - i + 1;
    if (n <= 2) for (let k = i; k <= j; k++) out.push(formatEntry(es[k]));
    else out.push(`${formatEntry(es[i])} … ${formatEntry(es[j])} (${n} entries)`);
    i = j + 1;
  }
  return out.join(', ');
}

export function formatSnapshotMeta(s: Snapshot): string {
  return `index=${s.metadata.index} term=${s.metadata.term} ${formatConfState(s.metadata.confState)}`;
}

/** e.g. `1->2 Vote term:2 log:1/5`, `1->2 Append term:2 log:1/5 commit:5 entries:[2/6 "x"]`. */
export function formatMessage(m: Message): string {
  const p = [`${m.from}->${m.to} ${m.type} term:${m.term}`];
  switch (m.type) {
    case MessageType.Vote:
    case MessageType.PreVote:
      p.push(`log:${m.logTerm}/${m.index}`);
      break;
    case MessageType.Append:
      p.push(`log:${m.logTerm}/${m.index}`, `commit:${m.commit}`);
      break;
    case MessageType.AppendResp:
      p.push(`index:${m.index}`);
      if (m.reject) p.push(`rejected hint:${m.rejectHint}/term:${m.logTerm}`);
      break;
    default:
      if (m.index !== 0) p.push(`index:${m.index}`);
      if (m.logTerm !== 0) p.push(`log-term:${m.logTerm}`);
      if (m.commit !== 0) p.push(`commit:${m.commit}`);
  }
  if (m.type !== MessageType.AppendResp) {
    if (m.reject) p.push('rejected');
    if (m.rejectHint !== 0) p.push(`hint:${m.rejectHint}`);
  }
  if (m.entries.length > 0) p.push(`entries:[${formatEntries(m.entries)}]`);
  if (m.snapshot) p.push(`snapshot:{${formatSnapshotMeta(m.snapshot)}}`);
  if (m.context !== '') p.push(`ctx:${m.context}`);
  return p.join(' ');
}

function formatHardState(hs: HardState): string {
  return `term=${hs.term} vote=${hs.vote} commit=${hs.commit}`;
}

/** The Ready in the order the driver must handle it (types.ts: persist, send, apply). */
export function formatReady(rd: Ready): string[] {
  const out: string[] = [];
  if (rd.softState) out.push(`role: ${rd.softState.role} (leader=${rd.softState.leaderId})`);
  if (rd.snapshot) out.push(`persist snapshot: ${formatSnapshotMeta(rd.snapshot)}`);
  if (rd.entries.length > 0) out.push(`persist entries: ${formatEntries(rd.entries)}`);
  if (rd.hardState) out.push(`persist hard-state: ${formatHardState(rd.hardState)}`);
  if (rd.messages.length > 0) {
    out.push('send:');
    for (const m of rd.messages) out.push(`  ${formatMessage(m)}`);
  }
  if (rd.committedEntries.length > 0) out.push(`apply: ${formatEntries(rd.committedEntries)}`);
  if (rd.readStates.length > 0) {
    out.push(`read-states: ${rd.readStates.map((r) => `${r.requestCtx}@${r.index}`).join(', ')}`);
  }
  return out;
}

// ---------------------------------------------------------------- storage and state machine

/**
 * What a node has on disk. Each method returns the contract violations it saw (empty
 * when the core behaved); the driver reports them.
 */
export class MemStorage {
  hardState: HardState = { term: 0, vote: NO_NODE, commit: 0 };
  snapshot: Snapshot | undefined;
  entries: Entry[] = [];

  constructor(readonly initialConfState: ConfState) {}

  snapIndex(): number {
    return this.snapshot?.metadata.index ?? 0;
  }

  lastIndex(): number {
    return this.entries.length > 0 ? this.entries[this.entries.length - 1].index : this.snapIndex();
  }

  /** Term at `index`; undefined when compacted away or beyond the end. */
  term(index: number): number | undefined {
    if (index === this.snapIndex()) return this.snapshot?.metadata.term ?? 0;
    if (index < this.snapIndex() || index > this.lastIndex()) return undefined;
    return this.entries[index - this.snapIndex() - 1].term;
  }

  /** types.ts: a snapshot replaces the whole stored log. */
  applySnapshot(s: Snapshot): string[] {
    const v: string[] = [];
    if (s.metadata.index <= this.snapIndex()) v.push(`snapshot ${s.metadata.index} is not newer than the stored one (${this.snapIndex()})`);
    if (s.metadata.index < this.hardState.commit) v.push(`snapshot ${s.metadata.index} is behind the persisted commit ${this.hardState.commit}`);
    this.snapshot = s;
    this.entries = [];
    return v;
  }

  /** types.ts: entries replace any stored entries at or after the first one's index. */
  append(es: readonly Entry[]): string[] {
    const v: string[] = [];
    if (es.length === 0) return v;
    const first = es[0].index;
    es.forEach((e, k) => {
      if (e.index !== first + k) v.push(`Ready.entries not contiguous at ${e.index}`);
    });
    if (first <= this.snapIndex()) v.push(`Ready.entries start at ${first}, inside the snapshot (${this.snapIndex()})`);
    if (first > this.lastIndex() + 1) v.push(`Ready.entries start at ${first}, leaving a gap after ${this.lastIndex()}`);
    if (v.length > 0) return v;
    for (const e of es) {
      const t = this.term(e.index);
      if (e.index <= this.hardState.commit && t !== undefined && t !== e.term) {
        v.push(`entry ${e.index} was persisted as committed with term ${t}, now overwritten with term ${e.term}`);
      }
    }
    this.entries = this.entries.slice(0, first - this.snapIndex() - 1).concat(es);
    return v;
  }

  setHardState(hs: HardState): string[] {
    const v: string[] = [];
    const old = this.hardState;
    if (hs.term < old.term) v.push(`term went back from ${old.term} to ${hs.term}`);
    if (hs.term === old.term && old.vote !== NO_NODE && hs.vote !== old.vote) {
      v.push(`voted twice in term ${hs.term}: ${old.vote}, then ${hs.vote}`);
    }
    if (hs.commit < old.commit) v.push(`commit went back from ${old.commit} to ${hs.commit}`);
    this.hardState = hs;
    return v;
  }

  compact(s: Snapshot): void {
    this.entries = this.entries.filter((e) => e.index > s.metadata.index);
    this.snapshot = s;
  }

  /** What a restarted node is built from; the state machine restarts from the snapshot. */
  restoreState(): RaftStorageState {
    return {
      hardState: this.hardState,
      snapshot: this.snapshot,
      entries: [...this.entries],
      initialConfState: this.initialConfState,
      applied: this.snapIndex(),
    };
  }
}

interface AppliedRecord {
  readonly index: number;
  readonly term: number;
  readonly data: string;
}

/** A toy replicated state machine: the list of applied non-empty normal entries. */
export class StateMachine {
  applied = 0;
  records: AppliedRecord[] = [];

  snapshotData(index: number): Uint8Array {
    return bytes(JSON.stringify(this.records.filter((r) => r.index <= index)));
  }

  restore(s: Snapshot): AppliedRecord[] {
    this.records = s.data.length > 0 ? (JSON.parse(utf8.decode(s.data)) as AppliedRecord[]) : [];
    this.applied = s.metadata.index;
    return this.records;
  }
}

// ---------------------------------------------------------------- command parsing

export interface Command {
  readonly name: string;
  readonly pos: string[];
  readonly kw: Map<string, string[]>;
}

function splitTokens(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let depth = 0;
  let quoted = false;
  for (const ch of line.trim()) {
    if (ch === '"') quoted = !quoted;
    else if (!quoted && ch === '(') depth++;
    else if (!quoted && ch === ')') depth--;
    if (/\s/.test(ch) && depth === 0 && !quoted) {
      if (cur !== '') out.push(cur);
      cur = '';
    } else {
      cur += ch;
    }
  }
  if (cur !== '') out.push(cur);
  return out;
}

function parseValue(v: string): string[] {
  if (v.startsWith('(') && v.endsWith(')')) {
    const inner = v.slice(1, -1).trim();
    return inner === '' ? [] : inner.split(',').map((x) => x.trim());
  }
  if (v.startsWith('"') && v.endsWith('"')) return [v.slice(1, -1)];
  return [v];
}

export function parseCommand(line: string): Command {
  const [name, ...rest] = splitTokens(line);
  const pos: string[] = [];
  const kw = new Map<string, string[]>();
  for (const t of rest) {
    const eq = t.indexOf('=');
    if (eq > 0 && !t.startsWith('"')) kw.set(t.slice(0, eq), parseValue(t.slice(eq + 1)));
    else pos.push(...parseValue(t));
  }
  return { name, pos, kw };
}

/** A mistake in the script itself (not in the core): the test fails at once. */
export class ScriptError extends Error {}

function int(s: string | undefined, what: string): number {
  const n = Number(s);
  if (s === undefined || !Number.isInteger(n)) throw new ScriptError(`${what}: expected an integer, got ${s}`);
  return n;
}

// ---------------------------------------------------------------- the environment

interface NodeSlot {
  readonly id: number;
  readonly config: RaftConfig;
  /** Replaced only by `restart ID wipe=true` (an operator wiping the data dir). */
  storage: MemStorage;
  readonly sm: StateMachine;
  /** undefined while crashed. */
  raft: RaftNode | undefined;
}

export class InteractionEnv {
  readonly nodes = new Map<number, NodeSlot>();
  readonly violations: string[] = [];
  /** Called with each Ready before the driver handles it (for unit tests). */
  onReady: ((id: number, rd: Ready, storage: MemStorage) => void) | undefined;

  /** In-flight messages in send order. */
  private queue: Message[] = [];
  private isolated = new Set<number>();
  private cuts = new Set<string>();
  private out: string[] = [];
  // Safety bookkeeping per cluster; a cluster is named by its bootstrap voters, so a
  // script may run two independent clusters side by side (e.g. to contrast options).
  /** cluster/index -> the entry applied there by whichever node applied it first. */
  private appliedAt = new Map<string, { term: number; data: string; by: number }>();
  /** cluster/term -> its leader. */
  private leaderOfTerm = new Map<string, number>();
  private counts = new Map<string, number>();
  private quiet = false;
  /** node/ctx -> highest commit index known anywhere when the read was requested. */
  private readFloor = new Map<string, number>();
  private tally = { readies: 0, delivered: 0, dropped: 0 };

  // ------------------------------------------------------------ script entry point

  run(line: string): string {
    this.out = [];
    const cmd = parseCommand(line);
    try {
      this.execute(cmd);
    } catch (e) {
      if (e instanceof ScriptError) throw e;
      if (e instanceof RaftRefusedError) this.print(`refused ${e.refusal} (leader=${e.leaderId})`);
      else {
        const msg = e instanceof Error ? e.message : String(e);
        this.print(`error: ${msg}`);
      }
    }
    return this.out.length > 0 ? this.out.join('\n') : 'ok';
  }

  private execute(c: Command): void {
    const id = (): number => int(c.pos[0], `${c.name} id`);
    const ids = (from = 0): number[] => c.pos.slice(from).map((x) => int(x, `${c.name} id`));
    switch (c.name) {
      case 'add-nodes':
        return this.addNodes(int(c.pos[0], 'add-nodes count'), c.kw);
      case 'campaign':
        return this.raft(id()).campaign();
      case 'tick': {
        const n = int(c.pos[0], 'tick count');
        for (const x of ids(1)) this.tick(x, n);
        return;
      }
      case 'tick-heartbeat':
        return this.tick(id(), this.slot(id()).config.heartbeatTimeoutTicks);
      case 'tick-election':
        return this.tickElection(id());
      case 'process-ready':
        for (const x of ids()) this.processReady(x);
        return;
      case 'deliver-msgs': {
        if (c.kw.has('drop')) {
          for (const to of c.kw.get('drop')!.map((x) => int(x, 'drop'))) this.dropMsgs(to, () => true);
          return;
        }
        for (const x of ids()) this.deliverMsgs(x, this.filter(c));
        return;
      }
      case 'drop-msgs':
        for (const x of ids()) this.dropMsgs(x, this.filter(c));
        return;
      case 'stabilize': {
        if (c.kw.get('quiet')?.[0] !== 'true') return this.stabilize(c.pos.length > 0 ? ids() : undefined);
        // Set-up phases: the same work, a one-line summary (violations still print).
        const before = { ...this.tally };
        this.quiet = true;
        try {
          this.stabilize(c.pos.length > 0 ? ids() : undefined);
        } finally {
          this.quiet = false;
        }
        const d = (k: keyof typeof before): number => this.tally[k] - before[k];
        this.print(`quiet: ${d('readies')} Readies handled, ${d('delivered')} messages delivered, ${d('dropped')} dropped`);
        return;
      }
      case 'propose': {
        const data = c.pos[1];
        if (data === undefined) throw new ScriptError('propose ID DATA');
        const count = c.kw.has('count') ? int(c.kw.get('count')![0], 'count') : 1;
        const got: { index: number; term: number }[] = [];
        for (let i = 1; i <= count; i++) got.push(this.raft(id()).propose(bytes(count > 1 ? `${data}${i}` : data)));
        const a = got[0];
        const b = got[got.length - 1];
        this.print(a === b ? `index=${a.index} term=${a.term}` : `index=${a.index}..${b.index} term=${a.term}`);
        return;
      }
      case 'propose-conf-change': {
        const cc = this.confChangeArg(c);
        const r = this.raft(id()).proposeConfChange(cc);
        this.print(`index=${r.index} term=${r.term}`);
        return;
      }
      case 'read-index': {
        const ctx = c.pos[1] ?? '';
        const known = [...this.nodes.values()].map((n) => n.raft?.status().commit ?? n.storage.hardState.commit);
        this.readFloor.set(`${id()}/${ctx}`, Math.max(...known));
        return this.raft(id()).readIndex(ctx);
      }
      case 'transfer-leader':
        return this.raft(id()).transferLeadership(int(c.pos[1], 'transfer-leader to'));
      case 'isolate':
        this.isolated.add(id());
        return;
      case 'cut':
        this.cuts.add(`${id()}->${int(c.pos[1], 'cut to')}`);
        return;
      case 'heal':
        this.isolated.clear();
        this.cuts.clear();
        return;
      case 'crash':
        return this.crash(id());
      case 'restart':
        return this.restart(id(), c.kw.get('wipe')?.[0] === 'true');
      case 'compact':
        return this.compact(id(), int(c.pos[1], 'compact index'));
      case 'status':
        return this.printStatus(id());
      case 'log':
        return this.printLog(id());
      case 'app':
        return this.printApp(id());
      case 'raft-state':
        return this.printRaftState();
      case 'msg-counts':
        return this.printCounts(c.kw.get('reset')?.[0] === 'true');
      default:
        throw new ScriptError(`unknown command ${c.name}`);
    }
  }

  private confChangeArg(c: Command): ConfChange {
    const kinds: [string, ConfChangeType][] = [
      ['add-learner', ConfChangeType.AddLearner],
      ['add-voter', ConfChangeType.AddVoter],
      ['remove', ConfChangeType.RemoveNode],
    ];
    for (const [k, type] of kinds) {
      const v = c.kw.get(k);
      if (v) return { type, nodeId: int(v[0], k) };
    }
    throw new ScriptError('propose-conf-change ID add-learner=X | add-voter=X | remove=X');
  }

  private filter(c: Command): (m: Message) => boolean {
    const from = c.kw.get('from')?.map((x) => int(x, 'from'));
    const types = c.kw.get('type');
    return (m) => (from === undefined || from.includes(m.from)) && (types === undefined || types.includes(m.type));
  }

  // ------------------------------------------------------------ nodes

  print(s: string): void {
    if (!this.quiet || s.startsWith('!!')) this.out.push(s);
  }

  private violation(s: string): void {
    this.violations.push(s);
    this.print(`!! VIOLATION: ${s}`);
  }

  slot(id: number): NodeSlot {
    const s = this.nodes.get(id);
    if (!s) throw new ScriptError(`no node ${id}`);
    return s;
  }

  /** The live RaftNode (for unit tests that poke at it directly). */
  raft(id: number): RaftNode {
    const r = this.slot(id).raft;
    if (!r) throw new ScriptError(`node ${id} is crashed`);
    return r;
  }

  storage(id: number): MemStorage {
    return this.slot(id).storage;
  }

  stateMachine(id: number): StateMachine {
    return this.slot(id).sm;
  }

  addNodes(n: number, kw: Map<string, string[]>): void {
    const num = (k: string, d: number): number => (kw.has(k) ? int(kw.get(k)![0], k) : d);
    const bool = (k: string): boolean => kw.get(k)?.[0] === 'true';
    const first = Math.max(0, ...this.nodes.keys()) + 1;
    const newIds = Array.from({ length: n }, (_, i) => first + i);
    const conf: ConfState = {
      voters: (kw.get('voters') ?? newIds.map(String)).map((x) => int(x, 'voters')),
      learners: (kw.get('learners') ?? []).map((x) => int(x, 'learners')),
    };
    const seed = num('seed', 1);
    for (const id of newIds) {
      const config: RaftConfig = {
        id,
        electionTimeoutTicks: num('election', 10),
        heartbeatTimeoutTicks: num('heartbeat', 1),
        random: seededRandom(seed * 1000 + id),
        preVote: bool('prevote'),
        checkQuorum: bool('checkquorum'),
        maxEntriesPerMsg: num('max-entries-per-msg', DEFAULT_RAFT_LIMITS.maxEntriesPerMsg),
        maxBytesPerMsg: num('max-bytes-per-msg', DEFAULT_RAFT_LIMITS.maxBytesPerMsg),
        maxInflightMsgs: num('max-inflight', DEFAULT_RAFT_LIMITS.maxInflightMsgs),
        maxUncommittedBytes: num('max-uncommitted-bytes', DEFAULT_RAFT_LIMITS.maxUncommittedBytes),
        maxCommittedEntriesPerReady: num('max-committed-per-ready', DEFAULT_RAFT_LIMITS.maxCommittedEntriesPerReady),
      };
      const storage = new MemStorage(conf);
      const slot: NodeSlot = { id, config, storage, sm: new StateMachine(), raft: undefined };
      slot.raft = new RaftNode(config, storage.restoreState());
      this.nodes.set(id, slot);
    }
  }

  private sortedIds(): number[] {
    return [...this.nodes.keys()].sort((a, b) => a - b);
  }

  tick(id: number, n: number): void {
    const r = this.raft(id);
    for (let i = 0; i < n; i++) this.guard(`tick ${id}`, () => r.tick());
  }

  /**
   * etcd ticks an election timeout; our timeouts are randomized in [E, 2E), so a
   * non-leader is ticked until it starts an election (its role or term changes, or a
   * pre-candidate sends a new round) and at most 2E times. A leader gets exactly E
   * ticks: one check-quorum round.
   */
  private tickElection(id: number): void {
    const r = this.raft(id);
    const e = this.slot(id).config.electionTimeoutTicks;
    const before = r.status();
    if (before.role === StateRole.Leader) return this.tick(id, e);
    // A pre-candidate's new round changes neither role nor term; it shows only as a new
    // Ready, so the old one must have been handled.
    if (r.hasReady()) throw new ScriptError(`tick-election ${id}: handle its Ready first (process-ready or stabilize)`);
    for (let i = 1; i <= 2 * e; i++) {
      this.guard(`tick ${id}`, () => r.tick());
      const s = r.status();
      if (s.role !== before.role || s.term !== before.term || r.hasReady()) return;
    }
    this.print(`${id} started no election in ${2 * e} ticks`);
  }

  /** A core exception while stepping or ticking is a broken invariant: record it. */
  private guard(what: string, f: () => void): void {
    try {
      f();
    } catch (e) {
      if (e instanceof RaftRefusedError) throw e;
      this.violation(`${what} threw: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  crash(id: number): void {
    const s = this.slot(id);
    s.raft = undefined;
    // What the crashed node had in its socket buffers is gone.
    this.queue = this.queue.filter((m) => m.to !== id);
  }

  restart(id: number, wipe = false): void {
    const s = this.slot(id);
    if (s.raft) throw new ScriptError(`node ${id} is not crashed`);
    if (wipe) s.storage = new MemStorage(s.storage.initialConfState);
    const state = s.storage.restoreState();
    s.sm.records = [];
    s.sm.applied = 0;
    if (state.snapshot) s.sm.restore(state.snapshot);
    s.raft = new RaftNode(s.config, state);
    this.print(`restarted ${id}: ${formatHardState(state.hardState)} last=${s.storage.lastIndex()} snapshot=${s.storage.snapIndex()}`);
  }

  compact(id: number, index: number): void {
    const s = this.slot(id);
    const snap = this.raft(id).compact(index, s.sm.snapshotData(index));
    s.storage.compact(snap);
    this.print(`snapshot ${formatSnapshotMeta(snap)}`);
  }

  // ------------------------------------------------------------ the driver loop

  /** Handle one Ready exactly as types.ts demands, checking what the contract promises. */
  processReady(id: number): void {
    const s = this.slot(id);
    const r = this.raft(id);
    if (!r.hasReady()) {
      this.print(`> ${id} has no Ready`);
      return;
    }
    const rd = r.ready();
    this.tally.readies++;
    this.onReady?.(id, rd, s.storage);
    this.print(`> ${id} handling Ready`);
    for (const l of formatReady(rd)) this.print(`  ${l}`);
    const v = (xs: string[]): void => xs.forEach((x) => this.violation(`node ${id}: ${x}`));

    // 1. persist: snapshot, entries, hard state.
    if (rd.snapshot) v(s.storage.applySnapshot(rd.snapshot));
    v(s.storage.append(rd.entries));
    if (rd.hardState) v(s.storage.setHardState(rd.hardState));
    v(this.checkPersisted(s, rd));

    // 2. send.
    for (const m of rd.messages) this.queue.push(m);

    // 3. apply.
    if (rd.snapshot) {
      for (const rec of s.sm.restore(rd.snapshot)) this.checkApplied(id, rec);
    }
    for (const e of rd.committedEntries) {
      if (e.index !== s.sm.applied + 1) v([`applied ${e.index} after ${s.sm.applied}`]);
      s.sm.applied = e.index;
      const rec = { index: e.index, term: e.term, data: e.type === EntryType.Normal ? utf8.decode(e.data) : formatEntry(e) };
      if (e.type === EntryType.Normal && e.data.length > 0) s.sm.records.push(rec);
      this.checkApplied(id, rec);
    }
    // Linearizability of reads (thesis §6.4): the index must cover every entry known
    // committed anywhere when the read was requested.
    for (const rs of rd.readStates) {
      const min = this.readFloor.get(`${id}/${rs.requestCtx}`);
      if (min !== undefined && rs.index < min) v([`read ${rs.requestCtx}@${rs.index} misses entries committed before it (commit ${min})`]);
    }

    // 4. advance.
    this.guard(`advance ${id}`, () => r.advance(rd));

    const st = r.status();
    if (st.role === StateRole.Leader) {
      const key = `${this.cluster(id)}/${st.term}`;
      const other = this.leaderOfTerm.get(key);
      if (other !== undefined && other !== id) this.violation(`two leaders in term ${st.term}: ${other} and ${id}`);
      this.leaderOfTerm.set(key, id);
    }
  }

  /** What must be durable once step 1 is done, before any message leaves. */
  private checkPersisted(s: NodeSlot, rd: Ready): string[] {
    const v: string[] = [];
    const st = s.storage;
    const hs = st.hardState;
    if (hs.commit > st.lastIndex()) v.push(`persisted commit ${hs.commit} beyond persisted log ${st.lastIndex()}`);
    for (const m of rd.messages) {
      if (m.from !== s.id) v.push(`message from ${m.from} in node ${s.id}'s Ready`);
      const pre = m.type === MessageType.PreVote || m.type === MessageType.PreVoteResp;
      if (!pre && m.term > hs.term) v.push(`${formatMessage(m)} sent before its term was persisted (term=${hs.term})`);
      // The vote must be durable, unless the node has durably moved to a later term
      // since (then it can never vote in that term again).
      if (m.type === MessageType.VoteResp && !m.reject && hs.term === m.term && hs.vote !== m.to) {
        v.push(`${formatMessage(m)} sent before the vote was persisted (${formatHardState(hs)})`);
      }
      if (m.type === MessageType.AppendResp && !m.reject && m.index > st.lastIndex()) {
        v.push(`${formatMessage(m)} acknowledges entries not persisted (last=${st.lastIndex()})`);
      }
      // An Append of the current term carries only durable entries. (One left over from an
      // earlier term as leader may carry entries truncated since: receivers of a later
      // term ignore it, and no leader counts an acknowledgement of it.)
      if (m.term === hs.term) {
        for (const e of m.entries) {
          if (st.term(e.index) !== e.term) v.push(`${formatMessage(m)} carries ${e.term}/${e.index}, not in the sender's stable log`);
        }
      }
    }
    for (const e of rd.committedEntries) {
      if (e.index > hs.commit) v.push(`applies ${e.index} beyond persisted commit ${hs.commit}`);
      const t = st.term(e.index);
      if (t !== undefined && t !== e.term) v.push(`applies ${e.term}/${e.index} but stored term is ${t}`);
      if (t === undefined && e.index > st.snapIndex()) v.push(`applies ${e.term}/${e.index}, which is not persisted`);
    }
    return v;
  }

  private cluster(id: number): string {
    return this.slot(id).storage.initialConfState.voters.join(',');
  }

  /** State Machine Safety (thesis §3.6.3): no two nodes apply different entries at one index. */
  private checkApplied(id: number, rec: AppliedRecord): void {
    const key = `${this.cluster(id)}/${rec.index}`;
    const prev = this.appliedAt.get(key);
    if (prev === undefined) this.appliedAt.set(key, { term: rec.term, data: rec.data, by: id });
    else if (prev.term !== rec.term || prev.data !== rec.data) {
      this.violation(`node ${id} applied ${rec.term}/${rec.index} ${JSON.stringify(rec.data)}, node ${prev.by} applied ${prev.term}/${rec.index} ${JSON.stringify(prev.data)}`);
    }
  }

  private blocked(m: Message): string | undefined {
    if (!this.nodes.has(m.to)) return `no node ${m.to}`;
    if (!this.nodes.get(m.to)!.raft) return `${m.to} crashed`;
    if (this.isolated.has(m.from)) return `${m.from} isolated`;
    if (this.isolated.has(m.to)) return `${m.to} isolated`;
    if (this.cuts.has(`${m.from}->${m.to}`)) return `${m.from}->${m.to} cut`;
    return undefined;
  }

  /** Steps every queued message to `to` that passes `pick`; returns how many were taken. */
  deliverMsgs(to: number, pick: (m: Message) => boolean = () => true): number {
    const take = this.queue.filter((m) => m.to === to && pick(m));
    if (take.length === 0) return 0;
    this.queue = this.queue.filter((m) => !take.includes(m));
    this.print(`> ${to} receiving messages`);
    for (const m of take) {
      const why = this.blocked(m);
      if (why !== undefined) {
        this.print(`  ${formatMessage(m)} -- dropped (${why})`);
        this.tally.dropped++;
        continue;
      }
      this.tally.delivered++;
      this.print(`  ${formatMessage(m)}`);
      this.count(m);
      const r = this.slot(to).raft!;
      this.guard(`step ${formatMessage(m)}`, () => r.step(m));
    }
    return take.length;
  }

  dropMsgs(to: number, pick: (m: Message) => boolean): void {
    const take = this.queue.filter((m) => m.to === to && pick(m));
    this.queue = this.queue.filter((m) => !take.includes(m));
    for (const m of take) this.print(`dropped: ${formatMessage(m)}`);
  }

  pendingMessages(): readonly Message[] {
    return this.queue;
  }

  private count(m: Message): void {
    const key = `${m.from}->${m.to} ${m.reject ? `${m.type}(rejected)` : m.type}`;
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
  }

  /** etcd's stabilize: handle every Ready, deliver every message, until nothing moves. */
  stabilize(only?: number[]): void {
    const ids = only ?? this.sortedIds();
    for (let round = 0; round < 1000; round++) {
      let moved = false;
      for (const id of ids) {
        const r = this.slot(id).raft;
        if (r && r.hasReady()) {
          this.processReady(id);
          moved = true;
        }
      }
      for (const id of ids) {
        if (this.deliverMsgs(id) > 0) moved = true;
      }
      if (!moved) return;
    }
    this.violation('did not stabilize in 1000 rounds');
  }

  // ------------------------------------------------------------ inspection

  private printStatus(id: number): void {
    const st = this.raft(id).status();
    this.print(
      `${id}: ${st.role} term=${st.term} vote=${st.vote} leader=${st.leaderId} commit=${st.commit} applied=${st.applied} ` +
        `last=${st.lastIndex} snapshot=${st.snapshotIndex} ${formatConfState(st.confState)}`,
    );
    if (st.leadTransferee !== NO_NODE) this.print(`transferring to ${st.leadTransferee}`);
    for (const p of st.progress) {
      this.print(`  ${p.id}: match=${p.match} next=${p.next} ${p.state}${p.isLearner ? ' learner' : ''}${p.recentActive ? '' : ' inactive'}`);
    }
  }

  private printLog(id: number): void {
    const st = this.slot(id).storage;
    this.print(`hard-state: ${formatHardState(st.hardState)}`);
    if (st.snapshot) this.print(`snapshot: ${formatSnapshotMeta(st.snapshot)}`);
    if (st.entries.length === 0) this.print('entries: none');
    else if (st.entries.length > 12) this.print(`entries: ${formatEntries(st.entries)}`);
    else for (const e of st.entries) this.print(formatEntry(e));
  }

  private printApp(id: number): void {
    const sm = this.slot(id).sm;
    const recs = sm.records.map((r) => JSON.stringify(r.data));
    const shown = recs.length > 8 ? [...recs.slice(0, 3), `… (${recs.length} records) …`, ...recs.slice(-3)] : recs;
    this.print(`applied=${sm.applied}: ${shown.join(', ') || '(nothing)'}`);
  }

  private printRaftState(): void {
    for (const id of this.sortedIds()) {
      const s = this.slot(id);
      if (!s.raft) {
        this.print(`${id}: crashed (on disk: ${formatHardState(s.storage.hardState)} last=${s.storage.lastIndex()})`);
        continue;
      }
      const st = s.raft.status();
      this.print(`${id}: ${st.role} term=${st.term} leader=${st.leaderId} commit=${st.commit} applied=${st.applied} last=${st.lastIndex}`);
    }
  }

  private printCounts(reset: boolean): void {
    if (reset) {
      this.counts.clear();
      return;
    }
    // One line per direction, e.g. "3->1: Append=2 AppendResp=1 AppendResp(rejected)=1".
    const byPair = new Map<string, string[]>();
    for (const k of [...this.counts.keys()].sort()) {
      const [pair, type] = k.split(' ');
      byPair.set(pair, [...(byPair.get(pair) ?? []), `${type}=${this.counts.get(k)}`]);
    }
    if (byPair.size === 0) this.print('no messages delivered');
    for (const [pair, xs] of byPair) this.print(`${pair}: ${xs.join(' ')}`);
  }
}
