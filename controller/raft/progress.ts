import { NodeId } from './types';

export type ProgressState = 'probe' | 'replicate' | 'snapshot';

/**
 * The leader's view of one follower or learner (etcd tracker.Progress).
 *  - probe: one Append at a time until the follower's match index is found;
 *  - replicate: pipelined Appends, at most maxInflight outstanding;
 *  - snapshot: an InstallSnapshot is outstanding; nothing else is sent.
 */
export class Progress {
  match = 0;
  next: number;
  state: ProgressState = 'probe';
  /** probe: an Append is outstanding, wait for a reply or a heartbeat response. */
  probeSent = false;
  pendingSnapshot = 0;
  /** Ticks spent waiting for a snapshot acknowledgement (resent after a bound). */
  snapshotTicks = 0;
  /** Set on any response; cleared by the leader's check-quorum (thesis §6.2). */
  recentActive = true;
  /** Last index of each Append in flight (replicate state). */
  inflights: number[] = [];
  /** Highest commit index sent to this follower (Append or Heartbeat). */
  sentCommit = 0;

  constructor(readonly id: NodeId, next: number, public isLearner: boolean) {
    this.next = next;
  }

  becomeProbe(): void {
    if (this.state === 'snapshot') {
      this.next = Math.max(this.match + 1, this.pendingSnapshot + 1);
    } else {
      this.next = this.match + 1;
    }
    this.state = 'probe';
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.inflights = [];
  }

  becomeReplicate(): void {
    this.state = 'replicate';
    this.next = this.match + 1;
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.inflights = [];
  }

  becomeSnapshot(snapshotIndex: number): void {
    this.state = 'snapshot';
    this.pendingSnapshot = snapshotIndex;
    this.snapshotTicks = 0;
    this.probeSent = false;
    this.inflights = [];
  }

  /** An acknowledgement up to n. Returns whether match moved. */
  maybeUpdate(n: number): boolean {
    let updated = false;
    if (this.match < n) {
      this.match = n;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, n + 1);
    return updated;
  }

  /**
   * A rejection of the Append whose previous index was `rejected`; `matchHint` is the
   * follower's hint (already mapped through the leader's log by term). Returns false
   * for a stale rejection.
   */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    if (this.state === 'replicate') {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    if (this.state === 'snapshot') return false;
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1);
    this.probeSent = false;
    return true;
  }

  freeInflightsTo(index: number): void {
    let i = 0;
    while (i < this.inflights.length && this.inflights[i] <= index) i++;
    if (i > 0) this.inflights.splice(0, i);
  }

  isPaused(maxInflight: number): boolean {
    switch (this.state) {
      case 'probe':
        return this.probeSent;
      case 'replicate':
        return this.inflights.length >= maxInflight;
      case 'snapshot':
        return true;
    }
  }
}
