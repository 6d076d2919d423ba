import { Entry, Snapshot } from './types';
import { raftAssert } from './raft-assert';

/**
 * The in-memory Raft log: a snapshot boundary (index, term) followed by contiguous
 * entries. It also knows how much of itself is durable (`stableIndex`), committed and
 * applied. The controller's metadata log is compacted into snapshots regularly, so
 * holding the tail in memory is bounded by the snapshot policy.
 */
export class RaftLog {
  snapIndex: number;
  snapTerm: number;
  /** entries[i] has index snapIndex + 1 + i. */
  private ents: Entry[];
  /** Highest index the driver has persisted (advance() moves it). */
  stableIndex: number;
  committed = 0;
  applied = 0;

  constructor(snapshot: Snapshot | undefined, entries: readonly Entry[]) {
    this.snapIndex = snapshot?.metadata.index ?? 0;
    this.snapTerm = snapshot?.metadata.term ?? 0;
    this.ents = [...entries];
    for (let i = 0; i < this.ents.length; i++) {
      raftAssert(this.ents[i].index === this.snapIndex + 1 + i, `stored entries not contiguous at ${this.ents[i].index}`);
    }
    this.stableIndex = this.lastIndex();
    this.committed = this.snapIndex;
    this.applied = this.snapIndex;
  }

  lastIndex(): number {
    return this.snapIndex + this.ents.length;
  }

  lastTerm(): number {
    return this.term(this.lastIndex())!;
  }

  firstIndex(): number {
    return this.snapIndex + 1;
  }

  /** Term of the entry at `index`; undefined when compacted away or beyond the end. */
  term(index: number): number | undefined {
    if (index === this.snapIndex) return this.snapTerm;
    if (index < this.snapIndex || index > this.lastIndex()) return undefined;
    return this.ents[index - this.snapIndex - 1].term;
  }

  entry(index: number): Entry | undefined {
    if (index <= this.snapIndex || index > this.lastIndex()) return undefined;
    return this.ents[index - this.snapIndex - 1];
  }

  matchTerm(index: number, term: number): boolean {
    return this.term(index) === term;
  }

  /** Thesis §3.6.1: a candidate's log is at least as up to date as ours. */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const myTerm = this.lastTerm();
    return lastTerm > myTerm || (lastTerm === myTerm && lastIndex >= this.lastIndex());
  }

  /**
   * Entries in [lo, hi], at most maxCount and about maxBytes (always at least one).
   * Undefined when lo has been compacted (the caller sends a snapshot instead).
   */
  slice(lo: number, hi: number, maxCount = Infinity, maxBytes = Infinity): Entry[] | undefined {
    if (lo <= this.snapIndex) return undefined;
    const end = Math.min(hi, this.lastIndex());
    const out: Entry[] = [];
    let bytes = 0;
    for (let i = lo; i <= end && out.length < maxCount; i++) {
      const e = this.ents[i - this.snapIndex - 1];
      bytes += e.data.length;
      if (out.length > 0 && bytes > maxBytes) break;
      out.push(e);
    }
    return out;
  }

  /** Append at the end (leader path). */
  appendNew(e: Entry): void {
    raftAssert(e.index === this.lastIndex() + 1, `append at ${e.index} after ${this.lastIndex()}`);
    this.ents.push(e);
  }

  /**
   * Follower path: entries that follow a matching (prevIndex, prevTerm). Skips entries we
   * already have, truncates at the first conflict (never at or below commit: that would
   * lose a committed entry, a bug), and appends the rest. Returns where it truncated
   * (if it did) and the index of the first entry it added (if any).
   */
  appendFollowing(entries: readonly Entry[]): { truncatedAt?: number; appendedFrom?: number } {
    let truncatedAt: number | undefined;
    let i = 0;
    for (; i < entries.length; i++) {
      const e = entries[i];
      const t = this.term(e.index);
      if (t === undefined) break; // beyond our end (entries are never below snapIndex here)
      if (t !== e.term) {
        raftAssert(e.index > this.committed, `conflict at committed index ${e.index} (commit ${this.committed})`);
        this.truncateFrom(e.index);
        truncatedAt = e.index;
        break;
      }
    }
    const appendedFrom = i < entries.length ? entries[i].index : undefined;
    for (; i < entries.length; i++) this.appendNew(entries[i]);
    return { truncatedAt, appendedFrom };
  }

  private truncateFrom(index: number): void {
    this.ents.length = index - this.snapIndex - 1;
    if (this.stableIndex >= index) this.stableIndex = index - 1;
  }

  commitTo(index: number): boolean {
    if (index <= this.committed) return false;
    raftAssert(index <= this.lastIndex(), `commit ${index} beyond last index ${this.lastIndex()}`);
    this.committed = index;
    return true;
  }

  /** Largest index <= `index` whose term is <= `term` (fast backtracking, etcd findConflictByTerm). */
  findConflictByTerm(index: number, term: number): number {
    let i = Math.min(index, this.lastIndex());
    for (; i > this.snapIndex; i--) {
      if (this.term(i)! <= term) return i;
    }
    return this.snapIndex;
  }

  /** Replace everything with a snapshot (a follower that was far behind). */
  restore(snapshot: Snapshot): void {
    this.snapIndex = snapshot.metadata.index;
    this.snapTerm = snapshot.metadata.term;
    this.ents = [];
    this.committed = snapshot.metadata.index;
    this.applied = snapshot.metadata.index;
    this.stableIndex = snapshot.metadata.index;
  }

  /** Drop entries <= index; they are covered by a snapshot the driver has persisted. */
  compactTo(index: number): void {
    raftAssert(index > this.snapIndex && index <= this.applied, `compact to ${index} outside (${this.snapIndex}, ${this.applied}]`);
    const term = this.term(index)!;
    this.ents = this.ents.slice(index - this.snapIndex);
    this.snapIndex = index;
    this.snapTerm = term;
  }
}
