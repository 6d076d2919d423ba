import { constants as fsConstants, promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { writeFully } from './file-io';

// The two sparse indexes of a segment (Kafka's OffsetIndex and TimeIndex), kept in memory as
// sorted arrays and mirrored to a file of fixed-size big-endian entries. Both are binary-searched, so a lookup is O(log entries); the entries are sparse (one
// per index.interval.bytes of log), so the scan after a lookup is bounded by that interval.
//
//   .index      8-byte entries: relativeOffset int32 (batch base offset - segment base),
//               position int32 (byte position of that batch in the .log)
//   .timeindex  12-byte entries: timestamp int64 (the largest record timestamp of the
//               segment up to and including the indexed batch), relativeOffset int32
//
// Entry i of both files is made for the same batch, so the two always have the same count.
// The files are derived data: the segment checks them on open and rebuilds them from the
// .log when they disagree with it (see log-segment.ts).
//
// Entries are written to the file lazily, not on the append path: `append` only adds to the
// arrays, and `writePending` writes every entry not yet in the file with one write. The
// segment calls it when enough entries are pending, before every fsync (roll, flush,
// truncation) and on close. A crash can therefore leave a file that is a prefix of the
// entries in memory (or a torn last entry); recovery handles both: after an unclean shutdown
// the active segment is rebuilt from its first byte anyway, and a short but consistent file
// is extended by the tail scan from its last entry (log-segment.ts recover).

interface EntryCodec {
  readonly bytes: number;
  write(buf: Buffer, pos: number, key: number, value: number): void;
  read(buf: Buffer, pos: number): [key: number, value: number];
}

const OFFSET_CODEC: EntryCodec = {
  bytes: 8,
  write: (buf, pos, key, value) => {
    buf.writeInt32BE(key, pos);
    buf.writeInt32BE(value, pos + 4);
  },
  read: (buf, pos) => [buf.readInt32BE(pos), buf.readInt32BE(pos + 4)],
};

const TIME_CODEC: EntryCodec = {
  bytes: 12,
  write: (buf, pos, key, value) => {
    buf.writeBigInt64BE(BigInt(key), pos);
    buf.writeInt32BE(value, pos + 8);
  },
  read: (buf, pos) => [Number(buf.readBigInt64BE(pos)), buf.readInt32BE(pos + 8)],
};

class SparseIndex {
  protected readonly keys: number[] = [];
  protected readonly values: number[] = [];
  /** Entries [0, writtenCount) are in the file; the file holds nothing past them (once recovered). */
  private writtenCount = 0;

  protected constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    private readonly codec: EntryCodec,
    /** False when the file length was not a whole number of entries (a torn write). */
    readonly wholeFile: boolean,
  ) {}

  protected static async openFile(path: string, codec: EntryCodec): Promise<{ fh: FileHandle; keys: number[]; values: number[]; whole: boolean }> {
    // One open that creates without truncating (read-write, not append), and a read of
    // exactly the file's size: readFile on an empty file allocates 64 KiB, twice per
    // partition opened, which a broker opening thousands of partitions paid for in GC.
    const rw = await fs.open(path, fsConstants.O_RDWR | fsConstants.O_CREAT);
    let bytes: Buffer;
    try {
      const size = (await rw.stat()).size;
      bytes = Buffer.allocUnsafe(size);
      let done = 0;
      while (done < size) {
        const { bytesRead } = await rw.read(bytes, done, size - done, done);
        if (bytesRead === 0) break; // shrank meanwhile: only what was read counts
        done += bytesRead;
      }
      bytes = bytes.subarray(0, done);
    } catch (e) {
      await rw.close().catch(() => undefined);
      throw e;
    }
    const keys: number[] = [];
    const values: number[] = [];
    const whole = bytes.length % codec.bytes === 0;
    for (let pos = 0; pos + codec.bytes <= bytes.length; pos += codec.bytes) {
      const [k, v] = codec.read(bytes, pos);
      keys.push(k);
      values.push(v);
    }
    return { fh: rw, keys, values, whole };
  }

  protected load(keys: number[], values: number[]): void {
    this.keys.push(...keys);
    this.values.push(...values);
    this.writtenCount = this.keys.length;
  }

  /** Entries in memory that are not in the file yet. */
  get pendingCount(): number {
    return this.keys.length - this.writtenCount;
  }

  get count(): number {
    return this.keys.length;
  }

  key(i: number): number {
    return this.keys[i]!;
  }

  value(i: number): number {
    return this.values[i]!;
  }

  /** Index of the last entry whose key is <= k (or < k when strict); -1 when none. */
  protected floor(k: number, strict: boolean): number {
    let lo = 0;
    let hi = this.keys.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const key = this.keys[mid]!;
      if (key < k || (!strict && key === k)) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    return found;
  }

  /** Adds an entry in memory only; writePending puts it in the file. */
  append(key: number, value: number): void {
    this.keys.push(key);
    this.values.push(value);
  }

  /** Writes the entries not yet in the file, with one write (a loop only on a partial write). */
  async writePending(): Promise<void> {
    const from = this.writtenCount;
    const to = this.keys.length;
    if (to <= from) return;
    const bytes = this.codec.bytes;
    const buf = Buffer.allocUnsafe((to - from) * bytes);
    for (let i = from; i < to; i++) this.codec.write(buf, (i - from) * bytes, this.keys[i]!, this.values[i]!);
    await writeFully(this.fh, buf, from * bytes);
    this.writtenCount = to;
  }

  /** Keeps the first `count` entries, in memory and in the file. */
  async truncateTo(count: number): Promise<void> {
    this.keys.length = Math.min(count, this.keys.length);
    this.values.length = this.keys.length;
    if (this.writtenCount > this.keys.length) {
      await this.fh.truncate(this.keys.length * this.codec.bytes);
      this.writtenCount = this.keys.length;
    }
  }

  /** Replaces every entry (after a rebuild), rewriting the file. */
  async replaceAll(keys: readonly number[], values: readonly number[]): Promise<void> {
    const buf = Buffer.allocUnsafe(keys.length * this.codec.bytes);
    for (let i = 0; i < keys.length; i++) this.codec.write(buf, i * this.codec.bytes, keys[i]!, values[i]!);
    await this.fh.truncate(0);
    if (buf.length > 0) await this.fh.write(buf, 0, buf.length, 0);
    this.keys.length = 0;
    this.values.length = 0;
    this.load([...keys], [...values]);
  }

  /** Writes the pending entries and fsyncs the file. */
  async sync(): Promise<void> {
    await this.writePending();
    await this.fh.sync();
  }

  /** Closes the file, writing the pending entries first unless `discard` (the file is being deleted). */
  async close(discard = false): Promise<void> {
    try {
      if (!discard) await this.writePending();
    } finally {
      await this.fh.close();
    }
  }
}

/** relative offset -> byte position, one entry per index interval. */
export class OffsetIndex extends SparseIndex {
  static async open(path: string): Promise<OffsetIndex> {
    const f = await SparseIndex.openFile(path, OFFSET_CODEC);
    const index = new OffsetIndex(f.fh, path, OFFSET_CODEC, f.whole);
    index.load(f.keys, f.values);
    return index;
  }

  /** The last entry at or below `relativeOffset`, or -1: where a scan for it starts. */
  floorEntry(relativeOffset: number): number {
    return this.floor(relativeOffset, false);
  }

  /** The first entry whose position is >= `position` (the count when none). */
  firstAtOrAfterPosition(position: number): number {
    let lo = 0;
    let hi = this.values.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.values[mid]! < position) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/** running max timestamp -> relative offset, one entry per offset-index entry. */
export class TimeIndex extends SparseIndex {
  static async open(path: string): Promise<TimeIndex> {
    const f = await SparseIndex.openFile(path, TIME_CODEC);
    const index = new TimeIndex(f.fh, path, TIME_CODEC, f.whole);
    index.load(f.keys, f.values);
    return index;
  }

  /**
   * The last entry whose timestamp is strictly below `timestampMs`, or -1. Every record up to
   * and including that entry's batch is older than `timestampMs`, so the first record at or
   * after it starts at that batch or later; the next entry's batch already holds one.
   */
  lastEntryBefore(timestampMs: number): number {
    return this.floor(timestampMs, true);
  }
}
