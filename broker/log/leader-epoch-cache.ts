import { strict as assert } from 'node:assert';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from './file-io';

// The start offset of each leader epoch in this replica's log (Kafka's LeaderEpochFileCache,
// KIP-101). A follower that becomes a follower of a new leader asks it for the end offset of
// its own latest epoch (OffsetsForLeaderEpoch) and truncates to it: this is what lets
// replicas agree on a common prefix after a leader change without trusting the high watermark
// (KIP-101 section "Solution", KIP-279 for the epoch returned with the end offset).
//
// Invariants: epochs strictly increase and start offsets never decrease along the list; each
// entry's start offset is the base offset of the first batch of that epoch in the log.
//
// File `leader-epoch-checkpoint` (text, Kafka's layout): the version "0", the entry count,
// then one "epoch startOffset" line per entry. Every change rewrites it with
// temp file + fsync + rename + directory fsync, so a crash leaves the old or the new file,
// never a mix. It is small (one line per epoch that has data in the log) and changes only
// when an epoch begins or the log is truncated, so the fsync costs nothing that matters.

export const LEADER_EPOCH_CHECKPOINT_FILE = 'leader-epoch-checkpoint';
const CHECKPOINT_VERSION = 0;
export const UNDEFINED_EPOCH = -1;
export const UNDEFINED_EPOCH_OFFSET = -1;

export interface EpochEntry {
  readonly epoch: number;
  readonly startOffset: number;
}

/** The answer to OffsetsForLeaderEpoch (KIP-279): the epoch found and where it ended. */
export interface EpochEndOffset {
  readonly epoch: number;
  readonly endOffset: number;
}

export type EpochCheckpointStatus = 'loaded' | 'missing' | 'corrupt';

export class LeaderEpochCache {
  private entries: EpochEntry[];

  private constructor(
    private readonly dir: string,
    entries: EpochEntry[],
  ) {
    this.entries = entries;
  }

  /** Loads the checkpoint; a missing or unreadable one gives an empty cache and says so. */
  static async open(dir: string): Promise<{ cache: LeaderEpochCache; status: EpochCheckpointStatus }> {
    let text: string;
    try {
      text = await fs.readFile(path.join(dir, LEADER_EPOCH_CHECKPOINT_FILE), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { cache: new LeaderEpochCache(dir, []), status: 'missing' };
      throw e;
    }
    const entries = parseCheckpoint(text);
    if (entries === undefined) return { cache: new LeaderEpochCache(dir, []), status: 'corrupt' };
    return { cache: new LeaderEpochCache(dir, entries), status: 'loaded' };
  }

  /** A copy of the entries, oldest first. */
  list(): EpochEntry[] {
    return [...this.entries];
  }

  /** The latest epoch with data in the log, or -1. */
  get latestEpoch(): number {
    return this.entries.length === 0 ? UNDEFINED_EPOCH : this.entries[this.entries.length - 1]!.epoch;
  }

  /**
   * Records that `epoch` starts at `startOffset`. A no-op for the latest epoch already known
   * from an offset at or below. Entries this one contradicts (an epoch >= it, or a start
   * offset >= it) are dropped first: the log is the truth and the cache follows it (Kafka's
   * assign). Returns whether anything changed; changes are persisted before returning.
   */
  async assign(epoch: number, startOffset: number): Promise<boolean> {
    assert(Number.isSafeInteger(epoch) && epoch >= 0, `epoch ${epoch}`);
    assert(Number.isSafeInteger(startOffset) && startOffset >= 0, `start offset ${startOffset}`);
    const last = this.entries[this.entries.length - 1];
    if (last !== undefined && last.epoch === epoch && last.startOffset <= startOffset) return false;
    this.entries = this.entries.filter((e) => e.epoch < epoch && e.startOffset < startOffset);
    this.entries.push({ epoch, startOffset });
    await this.persist();
    return true;
  }

  /**
   * KIP-101/KIP-279 OffsetsForLeaderEpoch for `requestedEpoch`:
   * - the latest epoch: (it, logEndOffset);
   * - an older epoch: (the largest epoch <= it, the start offset of the first epoch after
   *   it), i.e. where the next leader began writing;
   * - below every known epoch: (requestedEpoch, the start offset of the first epoch);
   * - above the latest, or none known: (-1, -1).
   */
  endOffsetFor(requestedEpoch: number, logEndOffset: number): EpochEndOffset {
    const undefinedAnswer = { epoch: UNDEFINED_EPOCH, endOffset: UNDEFINED_EPOCH_OFFSET };
    if (requestedEpoch === UNDEFINED_EPOCH || this.entries.length === 0) return undefinedAnswer;
    if (requestedEpoch === this.latestEpoch) return { epoch: requestedEpoch, endOffset: logEndOffset };
    const higher = this.entries.findIndex((e) => e.epoch > requestedEpoch);
    if (higher < 0) return undefinedAnswer;
    if (higher === 0) return { epoch: requestedEpoch, endOffset: this.entries[0]!.startOffset };
    return { epoch: this.entries[higher - 1]!.epoch, endOffset: this.entries[higher]!.startOffset };
  }

  /** The epoch of the batch holding `offset` according to the cache, or -1 when before all. */
  epochForOffset(offset: number): number {
    let lo = 0;
    let hi = this.entries.length - 1;
    let found = UNDEFINED_EPOCH;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (this.entries[mid]!.startOffset <= offset) {
        found = this.entries[mid]!.epoch;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    return found;
  }

  /** The log now ends at `endOffset` (exclusive): drop epochs that start at or after it. */
  async truncateFromEnd(endOffset: number): Promise<void> {
    const kept = this.entries.filter((e) => e.startOffset < endOffset);
    if (kept.length === this.entries.length) return;
    this.entries = kept;
    await this.persist();
  }

  /**
   * The log now starts at `startOffset` (retention): drop epochs that ended before it and
   * move the start of the epoch that holds it up to it.
   */
  async truncateFromStart(startOffset: number): Promise<void> {
    let firstKept = 0;
    while (firstKept + 1 < this.entries.length && this.entries[firstKept + 1]!.startOffset <= startOffset) firstKept++;
    const head = this.entries[firstKept];
    if (head === undefined || (firstKept === 0 && head.startOffset >= startOffset)) return;
    this.entries = [{ epoch: head.epoch, startOffset: Math.max(head.startOffset, startOffset) }, ...this.entries.slice(firstKept + 1)];
    await this.persist();
  }

  /** Forgets every epoch (the log was emptied). */
  async clear(): Promise<void> {
    if (this.entries.length === 0) return;
    this.entries = [];
    await this.persist();
  }

  /** Replaces the entries (a rebuild from the log) and persists them. */
  async replaceAll(entries: readonly EpochEntry[]): Promise<void> {
    for (let i = 1; i < entries.length; i++) {
      assert(entries[i]!.epoch > entries[i - 1]!.epoch && entries[i]!.startOffset >= entries[i - 1]!.startOffset, 'epoch entries out of order');
    }
    this.entries = [...entries];
    await this.persist();
  }

  private async persist(): Promise<void> {
    const lines = [String(CHECKPOINT_VERSION), String(this.entries.length), ...this.entries.map((e) => `${e.epoch} ${e.startOffset}`)];
    await writeFileAtomic(path.join(this.dir, LEADER_EPOCH_CHECKPOINT_FILE), this.dir, lines.join('\n') + '\n');
  }
}

/** The entries of a checkpoint file, or undefined when it is not one we wrote. */
export function parseCheckpoint(text: string): EpochEntry[] | undefined {
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  if (lines.length < 2 || lines[0] !== String(CHECKPOINT_VERSION)) return undefined;
  const count = Number(lines[1]);
  if (!Number.isSafeInteger(count) || count !== lines.length - 2) return undefined;
  const entries: EpochEntry[] = [];
  for (const line of lines.slice(2)) {
    const m = /^(\d+) (\d+)$/.exec(line);
    if (m === null) return undefined;
    const epoch = Number(m[1]);
    const startOffset = Number(m[2]);
    if (!Number.isSafeInteger(epoch) || !Number.isSafeInteger(startOffset)) return undefined;
    const prev = entries[entries.length - 1];
    if (prev !== undefined && (epoch <= prev.epoch || startOffset < prev.startOffset)) return undefined;
    entries.push({ epoch, startOffset });
  }
  return entries;
}
