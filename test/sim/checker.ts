// The simulator's invariant checker. It knows nothing about the network or the event
// queue: the cluster reports what it observes (a leader, a log segment, a persisted
// hard state, an applied entry, a read) and the checker throws InvariantViolation the
// moment a history breaks a Raft safety property. Kept separate so that tests can feed
// it fabricated histories and prove it is not vacuous.
//
// References are to Ongaro's thesis ("Consensus: Bridging Theory and Practice"):
// Figure 3.2 lists election safety, log matching, leader completeness and state machine
// safety; §6.4 defines linearizable reads with ReadIndex.

import { ConfChangeType, ConfState, Entry, EntryType, HardState, NodeId, decodeConfChange } from '../../controller/raft';

export type Invariant =
  | 'election safety'
  | 'vote safety'
  | 'log matching'
  | 'leader completeness'
  | 'state machine safety'
  | 'snapshot safety'
  | 'no duplicate entries'
  | 'commit monotonic'
  | 'linearizable read'
  | 'single pending reconfiguration'
  | 'ready contract'
  | 'api contract'
  | 'core threw'
  | 'liveness';

export class InvariantViolation extends Error {
  constructor(readonly invariant: Invariant, readonly detail: string) {
    super(`${invariant}: ${detail}`);
  }
}

export function violation(invariant: Invariant, detail: string): never {
  throw new InvariantViolation(invariant, detail);
}

/** Payload bytes as a string; latin1 maps every byte to one char, so it is lossless. */
export function dataKey(data: Uint8Array): string {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('latin1');
}

/** Everything that identifies an entry's content at a given index. */
export function entryKey(e: Entry): string {
  return `${e.term}|${e.type}|${dataKey(e.data)}`;
}

export function describeEntry(e: Entry): string {
  if (e.type === EntryType.ConfChange) {
    const cc = decodeConfChange(e.data);
    return `${e.index}/t${e.term} conf:${ConfChangeType[cc.type]}(${cc.nodeId})`;
  }
  return `${e.index}/t${e.term} ${e.data.length === 0 ? 'no-op' : JSON.stringify(dataKey(e.data))}`;
}

export function confKey(c: ConfState): string {
  const v = [...c.voters].sort((a, b) => a - b).join(',');
  const l = [...c.learners].sort((a, b) => a - b).join(',');
  return `voters=[${v}] learners=[${l}]`;
}

/** A node's log as the checker sees it: a snapshot boundary, then contiguous entries. */
export interface LogView {
  readonly snapIndex: number;
  /** Unknown when only the in-memory log was visible (the checker then uses its own record). */
  readonly snapTerm: number | undefined;
  readonly entries: readonly Entry[];
}

function viewLast(v: LogView): number {
  return v.snapIndex + v.entries.length;
}

interface Committed {
  readonly term: number;
  readonly key: string;
  readonly desc: string;
  readonly by: string;
}

interface ReadRequest {
  readonly node: NodeId;
  /** Highest commit index any node had reached when the read was requested. */
  readonly requiredIndex: number;
  /** Highest index acknowledged to a client when the read was requested. */
  readonly ackedIndex: number;
}

export class Checker {
  /** term -> the node that was leader in it (election safety, across all history). */
  private readonly leaderOf = new Map<number, NodeId>();
  /** `${node}/${term}` -> vote persisted in that term (a node votes at most once per term). */
  private readonly votes = new Map<string, NodeId>();
  /**
   * `${index}/${term}` -> content and the term before it, as first seen in any log.
   * `memOf` names the node while the entry has been seen only in that node's memory: it
   * never reached a disk or the network, so a crash of that node erases it (see onCrash).
   */
  private readonly logIndex = new Map<string, { key: string; prevTerm: number | undefined; desc: string; by: string; memOf: string | undefined }>();
  /** The one committed log, index -> entry, as learned from commits and applies. */
  private readonly canonical: (Committed | undefined)[] = [];
  /** Hash of the state machine after applying through index (state machine safety). */
  private readonly hashAt: (number | undefined)[] = [];
  /** payload -> index it committed at (a proposal is never committed twice). */
  private readonly payloadAt = new Map<string, number>();
  /**
   * Entries that became committed since the cluster last asked (for leader completeness),
   * with the term of the node that reported them: the term in which the entry was
   * committed is at most that (a node learns of a commit only from a leader of its term or
   * an earlier one), so every leader of a later term must hold it.
   */
  private fresh: { index: number; reporterTerm: number }[] = [];
  private readonly reads = new Map<string, ReadRequest>();
  /** The highest commit index any node has reported. */
  maxCommit = 0;
  /** The highest index whose proposal was acknowledged (applied) to its client. */
  maxAcked = 0;

  // ------------------------------------------------------------ elections

  /** `id` is leader of `term` (from status() or a Ready's soft state). */
  onLeader(term: number, id: NodeId): void {
    const other = this.leaderOf.get(term);
    if (other === undefined) this.leaderOf.set(term, id);
    else if (other !== id) violation('election safety', `two leaders in term ${term}: n${other} and n${id}`);
  }

  leaders(): number {
    return this.leaderOf.size;
  }

  /** A hard state reached stable storage: terms never go back, one vote per term. */
  onPersistHardState(node: NodeId, prev: HardState, hs: HardState): void {
    if (hs.term < prev.term) violation('vote safety', `n${node} persisted term ${hs.term} after ${prev.term}`);
    if (hs.commit < prev.commit) violation('commit monotonic', `n${node} persisted commit ${hs.commit} after ${prev.commit}`);
    if (hs.vote === 0) {
      if (hs.term === prev.term && prev.vote !== 0) violation('vote safety', `n${node} forgot its vote for n${prev.vote} in term ${hs.term}`);
      return;
    }
    const k = `${node}/${hs.term}`;
    const v = this.votes.get(k);
    if (v === undefined) this.votes.set(k, hs.vote);
    else if (v !== hs.vote) violation('vote safety', `n${node} voted for n${v} and then n${hs.vote} in term ${hs.term}`);
  }

  // ------------------------------------------------------------ logs

  /**
   * Entries seen in some log (persisted, in memory, or in flight in an Append) following
   * (prevIndex, prevTerm). Log matching (Figure 3.2) follows by induction from: an
   * (index, term) pair always names the same content and the same previous term.
   */
  onLogSegment(by: string, prevIndex: number, prevTerm: number | undefined, entries: readonly Entry[]): void {
    const memOwner = by.endsWith('(mem)') ? by.slice(0, -'(mem)'.length) : undefined;
    let pi = prevIndex;
    let pt = prevTerm;
    for (const e of entries) {
      if (e.index !== pi + 1) violation('log matching', `${by}: entry ${e.index} follows ${pi} (not contiguous)`);
      if (pt !== undefined && e.term < pt) violation('log matching', `${by}: entry ${describeEntry(e)} has a lower term than its predecessor (t${pt})`);
      const k = `${e.index}/${e.term}`;
      const key = `${e.type}|${dataKey(e.data)}`;
      const seen = this.logIndex.get(k);
      if (seen === undefined) {
        this.logIndex.set(k, { key, prevTerm: pt, desc: describeEntry(e), by, memOf: memOwner });
      } else {
        if (seen.memOf !== undefined && seen.memOf !== memOwner) this.logIndex.set(k, { ...seen, memOf: undefined });
        if (seen.key !== key) violation('log matching', `entry ${k} is ${seen.desc} in ${seen.by} but ${describeEntry(e)} in ${by}`);
        if (seen.prevTerm !== undefined && pt !== undefined && seen.prevTerm !== pt) {
          violation('log matching', `entry ${k}: the entry before it has term ${seen.prevTerm} in ${seen.by} but ${pt} in ${by}`);
        }
        if (seen.prevTerm === undefined && pt !== undefined) this.logIndex.set(k, { ...this.logIndex.get(k)!, prevTerm: pt });
      }
      pi = e.index;
      pt = e.term;
    }
  }

  /**
   * Node `node` crashed: entries only ever in its memory are gone as if never written. This
   * matters for a single voter, which wins an election alone, before its new term is on
   * disk: if it crashes before the fsync, its next incarnation can win that same term again
   * and fill the same (index, term) slots with other entries. Nothing of the first
   * incarnation escaped (a Ready that changes the term is sent only after it is persisted),
   * so no other log can hold the lost entries; log matching is about logs that exist.
   */
  onCrash(node: NodeId): void {
    const owner = `n${node}`;
    for (const [k, v] of this.logIndex) if (v.memOf === owner) this.logIndex.delete(k);
  }

  /** Check a whole log: contiguity, log matching, and that it agrees with everything committed below its end. */
  onLog(by: string, v: LogView): void {
    const snapTerm = v.snapTerm ?? this.canonical[v.snapIndex]?.term ?? (v.snapIndex === 0 ? 0 : undefined);
    this.onLogSegment(by, v.snapIndex, snapTerm, v.entries);
  }

  // ------------------------------------------------------------ commits and state machines

  /**
   * `entry` is committed (a node applied it, or persisted a commit index covering it);
   * `reporterTerm` is that node's current term.
   */
  onCommitted(by: string, e: Entry, reporterTerm: number): void {
    const key = entryKey(e);
    const c = this.canonical[e.index];
    if (c === undefined) {
      this.canonical[e.index] = { term: e.term, key, desc: describeEntry(e), by };
      this.fresh.push({ index: e.index, reporterTerm });
      if (e.type === EntryType.Normal && e.data.length > 0) {
        const p = dataKey(e.data);
        const at = this.payloadAt.get(p);
        if (at !== undefined && at !== e.index) violation('no duplicate entries', `payload ${JSON.stringify(p)} committed at ${at} and again at ${e.index}`);
        this.payloadAt.set(p, e.index);
      }
    } else if (c.key !== key) {
      violation('state machine safety', `index ${e.index} committed as ${c.desc} (${c.by}) and as ${describeEntry(e)} (${by})`);
    }
  }

  /** A node applied `e`, after which its state machine hashes to `hashAfter`. */
  onApply(by: string, e: Entry, hashAfter: number, reporterTerm: number): void {
    this.onCommitted(by, e, reporterTerm);
    const h = this.hashAt[e.index];
    if (h === undefined) this.hashAt[e.index] = hashAfter;
    else if (h !== hashAfter) violation('state machine safety', `${by} state after applying ${describeEntry(e)} hashes to ${hashAfter.toString(16)}, others to ${h.toString(16)}`);
  }

  /** A snapshot at (index, term) is known: it must agree with the committed log and the applied state. */
  onSnapshot(by: string, index: number, term: number, hash: number | undefined): void {
    const c = this.canonical[index];
    if (c !== undefined && c.term !== term) violation('snapshot safety', `${by} snapshot ${index}/t${term} but ${c.desc} was committed there (${c.by})`);
    if (hash !== undefined) {
      const h = this.hashAt[index];
      if (h === undefined) this.hashAt[index] = hash;
      else if (h !== hash) violation('snapshot safety', `${by} snapshot at ${index} holds state ${hash.toString(16)}, applied state there is ${h.toString(16)}`);
    }
  }

  committedTerm(index: number): number | undefined {
    return this.canonical[index]?.term;
  }

  /** The entryKey() of what is known committed at `index`, if anything. */
  committedKey(index: number): string | undefined {
    return this.canonical[index]?.key;
  }

  committedCount(): number {
    return this.canonical.length === 0 ? 0 : this.canonical.length - 1;
  }

  /** A node's commit index, observed after an event. */
  onCommitIndex(commit: number): void {
    if (commit > this.maxCommit) this.maxCommit = commit;
  }

  /** A client learned that its proposal at `index` applied. */
  onAck(index: number): void {
    if (index > this.maxAcked) this.maxAcked = index;
  }

  // ------------------------------------------------------------ leader completeness

  /**
   * Leader completeness (Figure 3.2): "if an entry is committed in a given term, it is
   * present in the logs of the leaders of all higher terms". Called with 'all' when a
   * leader is first seen (everything committed so far was committed in an earlier term:
   * a majority that moved on to a later term cannot elect it), and with the fresh commits
   * while it leads (only those reported in an earlier term than the leader's count).
   * `log` is the leader's whole log (in memory).
   */
  checkLeaderLog(id: NodeId, term: number, log: LogView, fresh: readonly { index: number; reporterTerm: number }[] | 'all'): void {
    const check = (i: number): void => {
      const c = this.canonical[i];
      if (c === undefined || c.term > term) return;
      if (i < log.snapIndex) return; // covered by the snapshot, checked by onSnapshot
      if (i > viewLast(log)) {
        violation('leader completeness', `leader n${id} of term ${term} lacks committed ${c.desc} (log ends at ${viewLast(log)})`);
      }
      if (i === log.snapIndex) {
        if (log.snapTerm !== undefined && log.snapTerm !== c.term) violation('leader completeness', `leader n${id} of term ${term} has snapshot ${i}/t${log.snapTerm}, committed is ${c.desc}`);
        return;
      }
      const e = log.entries[i - log.snapIndex - 1];
      if (entryKey(e) !== c.key) violation('leader completeness', `leader n${id} of term ${term} has ${describeEntry(e)} where ${c.desc} was committed (${c.by})`);
    };
    if (fresh === 'all') {
      for (let i = 1; i < this.canonical.length; i++) check(i);
    } else {
      for (const f of fresh) if (f.reporterTerm < term) check(f.index);
    }
  }

  /** Entries committed since the last call. */
  takeFresh(): { index: number; reporterTerm: number }[] {
    const f = this.fresh;
    this.fresh = [];
    return f;
  }

  // ------------------------------------------------------------ linearizable reads

  onReadRequested(ctx: string, node: NodeId): void {
    if (this.reads.has(ctx)) throw new Error(`read ctx ${ctx} reused by the workload`);
    this.reads.set(ctx, { node, requiredIndex: this.maxCommit, ackedIndex: this.maxAcked });
  }

  /**
   * §6.4: the read index must cover every write that completed before the read began,
   * and indeed every entry any node knew committed by then (a stale leader must not serve).
   */
  onReadState(node: NodeId, ctx: string, index: number): void {
    const r = this.reads.get(ctx);
    if (r === undefined) violation('linearizable read', `n${node} got read state ${index} for unknown ctx ${JSON.stringify(ctx)}`);
    if (r.node !== node) violation('linearizable read', `read ${ctx} was requested at n${r.node} but answered at n${node}`);
    if (index < r.ackedIndex) violation('linearizable read', `read ${ctx} at n${node} got index ${index}, but index ${r.ackedIndex} was acknowledged to a client before the read began`);
    if (index < r.requiredIndex) violation('linearizable read', `read ${ctx} at n${node} got index ${index}, but index ${r.requiredIndex} was committed before the read began`);
  }
}
