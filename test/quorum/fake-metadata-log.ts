import { FlotillaError } from '../../shared/errors/error-codes';
import type { MetadataLog, StateMachine } from '../../controller/quorum';

// A single-node, in-memory MetadataLog: a proposal is appended, committed and applied on a
// later microtask (as asynchronous as the real driver), or held until commitAll() in manual
// mode. Followers attached with follow() apply every committed entry too.

export interface FakeEntry {
  readonly index: number;
  readonly term: number;
  readonly data: Uint8Array;
}

interface Held {
  readonly data: Uint8Array;
  readonly resolve: (r: { index: number; term: number }) => void;
  readonly reject: (err: unknown) => void;
}

export class FakeMetadataLog implements MetadataLog {
  leader = false;
  term = 0;
  /** When false, proposals wait for commitAll() / failAll(). */
  autoCommit = true;
  readonly entries: FakeEntry[] = [];
  private readonly held: Held[] = [];
  private readonly machines: StateMachine[] = [];

  /** The controller under test; more machines (followers) may be added with follow(). */
  attach(sm: StateMachine): void {
    this.machines.push(sm);
  }

  follow(sm: StateMachine): void {
    this.machines.push(sm);
    for (const e of this.entries) sm.apply(e.index, e.term, e.data);
  }

  /** Raft: a new leader first commits an empty entry of its term (thesis §6.4). */
  becomeLeader(): void {
    this.leader = true;
    this.term++;
    this.commit(new Uint8Array(0));
  }

  loseLeadership(): void {
    this.leader = false;
    this.failAll(new FlotillaError('NOT_CONTROLLER', 'fake log: leadership lost'));
  }

  lastIndex(): number {
    return this.entries.length === 0 ? 0 : this.entries[this.entries.length - 1].index;
  }

  isLeader(): boolean {
    return this.leader;
  }

  async readIndex(): Promise<number> {
    if (!this.leader) throw new FlotillaError('NOT_CONTROLLER', 'fake log: not the leader');
    return this.lastIndex();
  }

  propose(data: Uint8Array): Promise<{ index: number; term: number }> {
    if (!this.leader) return Promise.reject(new FlotillaError('NOT_CONTROLLER', 'fake log: not the leader'));
    return new Promise((resolve, reject) => {
      this.held.push({ data, resolve, reject });
      if (this.autoCommit) queueMicrotask(() => this.commitAll());
    });
  }

  /** Commit and apply every held proposal, in order. */
  commitAll(): void {
    for (const h of this.held.splice(0)) h.resolve(this.commit(h.data));
  }

  /** Drop every held proposal with `err`. */
  failAll(err: unknown): void {
    for (const h of this.held.splice(0)) h.reject(err);
  }

  /** Reject the oldest held proposal (it never reaches the log); the others stay held. */
  dropOldest(err: unknown): void {
    this.held.shift()?.reject(err);
  }

  /** Commit the held proposal at position i before the older ones (they stay held). */
  commitHeldAt(i: number): void {
    const [h] = this.held.splice(i, 1);
    if (h !== undefined) h.resolve(this.commit(h.data));
  }

  /** Commit an entry nobody proposed here (another leader's, or a record-free one). */
  commitForeign(data: Uint8Array): void {
    this.commit(data);
  }

  heldCount(): number {
    return this.held.length;
  }

  private commit(data: Uint8Array): { index: number; term: number } {
    const entry = { index: this.lastIndex() + 1, term: this.term, data };
    this.entries.push(entry);
    for (const sm of this.machines) sm.apply(entry.index, entry.term, entry.data);
    return { index: entry.index, term: entry.term };
  }
}
