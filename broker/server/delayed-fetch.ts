import type { Partition } from '../replica/partition';

// Parked fetches (Kafka's DelayedFetch purgatory, keyed by partition): a long-poll fetch that
// did not find min_bytes registers on each of its partitions and is woken when one of them
// moves (log end for followers, high watermark for consumers, a role change for both). The
// waker re-reads; the fetch answers when it has enough, on its max wait, or when cancelled.
// Bounded: past `max` parked fetches, a fetch is answered at once with what it has.
// Replication streams (replica-stream.ts) park each unanswered follower position here too,
// one entry per position; when full, a position is answered on its max wait instead.

export interface ParkedFetch {
  /** Something moved on one of its partitions. */
  readonly wake: () => void;
}

export class DelayedFetches {
  private readonly byPartition = new Map<Partition, Set<ParkedFetch>>();
  private parked = 0;

  constructor(private readonly max: number) {}

  get size(): number {
    return this.parked;
  }

  /** Parks `f` on `partitions`; returns the unpark function, or null when full. */
  park(f: ParkedFetch, partitions: readonly Partition[]): (() => void) | null {
    if (this.parked >= this.max) return null;
    this.parked++;
    const unique = [...new Set(partitions)];
    for (const p of unique) {
      let set = this.byPartition.get(p);
      if (set === undefined) this.byPartition.set(p, (set = new Set()));
      set.add(f);
    }
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.parked--;
      for (const p of unique) {
        const set = this.byPartition.get(p);
        set?.delete(f);
        if (set?.size === 0) this.byPartition.delete(p);
      }
    };
  }

  /** Partition `p` moved: wake every fetch parked on it. */
  notify(p: Partition): void {
    const set = this.byPartition.get(p);
    if (set === undefined) return;
    for (const f of [...set]) f.wake();
  }
}
