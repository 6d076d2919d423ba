import { strict as assert } from 'node:assert';
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import { FlotillaError } from '../../shared/errors/error-codes';
import { FileWindow, unlinkIfPresent, writeFully } from './file-io';
import {
  BATCH_HEADER_BYTES,
  RecordBatchHeader,
  batchCrcMatches,
  decodeRecordBatch,
  tryReadBatchHeader,
} from '../../shared/records/record-batch';
import { OffsetIndex, TimeIndex } from './segment-index';

// One segment of a partition log (Kafka's LogSegment): an append-only file of whole record
// batches named by the offset of its first batch, plus its sparse offset and time indexes
// (segment-index.ts). Offsets in a segment are contiguous: the first batch starts at the
// segment's base offset and every batch starts where the previous one ended.
//
// The index rule is a pure function of batch positions, so a rebuild reproduces the same
// entries: a batch gets an entry (in both indexes) when it starts at least
// index.interval.bytes after the last indexed batch (the segment start counts as one).
// Hence a lookup binary-searches to an entry and then walks at most one interval of headers.
//
// A segment does no locking: PartitionLog runs every operation on it one at a time.

export const LOG_FILE_SUFFIX = '.log';
export const INDEX_FILE_SUFFIX = '.index';
export const TIME_INDEX_FILE_SUFFIX = '.timeindex';
const OFFSET_DIGITS = 20;
/**
 * Index entries are written to their files once this many are pending (and before every
 * fsync and on close): one write per 256 entries, about 1 MiB of log at the default
 * index.interval.bytes, instead of two writes per indexed batch on the append path.
 */
export const INDEX_WRITE_BATCH_ENTRIES = 256;
/** Relative offsets and positions are int32 in the index files. */
export const MAX_RELATIVE_OFFSET = 0x7fffffff;

/** "00000000000000000042" for base offset 42. */
export function segmentFileStem(baseOffset: number): string {
  return String(baseOffset).padStart(OFFSET_DIGITS, '0');
}

/** The base offset of a segment's .log file name, or undefined for any other name. */
export function parseSegmentFileName(name: string): number | undefined {
  const m = /^(\d{20})\.log$/.exec(name);
  if (m === null) return undefined;
  const n = Number(m[1]);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** What opening a segment found. */
export interface SegmentRecovery {
  /** 'full': every batch was validated; 'tail': only those after the last index entry. */
  readonly validated: 'full' | 'tail';
  /** Bytes cut from the end of the .log (a torn or corrupt tail); 0 when none. */
  readonly truncatedBytes: number;
  /** Where the cut was made and why (absent when nothing was cut). */
  readonly truncatedAtPosition?: number;
  readonly reason?: string;
  /** The index files were rewritten (rebuilt from the .log or extended). */
  readonly indexesRewritten: boolean;
}

/** Called for each batch a recovery or a scan accepts, in offset order. */
export type BatchVisitor = (header: RecordBatchHeader, position: number) => void;

interface ScanStart {
  readonly position: number;
  readonly offset: number;
  readonly maxTimestampMs: number;
  /** Index entries kept (those before `position`). */
  readonly keptEntries: number;
}

export class LogSegment {
  /** Bytes of valid batches in the .log (the file is never longer once recovered). */
  sizeBytes = 0;
  /** The offset the next batch must start at (baseOffset when empty). */
  nextOffset: number;
  /** Largest record timestamp in the segment; -1 when empty. */
  maxTimestampMs = -1;
  /** Wall-clock time of the first append since this segment was created or opened (segment.ms). */
  rollStartMs: number | undefined;
  private lastIndexedPosition = 0;

  private constructor(
    readonly dir: string,
    readonly baseOffset: number,
    private readonly fh: FileHandle,
    private readonly offsetIndex: OffsetIndex,
    private readonly timeIndex: TimeIndex,
    private readonly indexIntervalBytes: number,
  ) {
    this.nextOffset = baseOffset;
  }

  static filePaths(dir: string, baseOffset: number): { log: string; index: string; timeIndex: string } {
    const stem = path.join(dir, segmentFileStem(baseOffset));
    return { log: stem + LOG_FILE_SUFFIX, index: stem + INDEX_FILE_SUFFIX, timeIndex: stem + TIME_INDEX_FILE_SUFFIX };
  }

  /** A new, empty segment; any files left under its name are emptied. */
  static async create(dir: string, baseOffset: number, indexIntervalBytes: number): Promise<LogSegment> {
    const p = LogSegment.filePaths(dir, baseOffset);
    const fh = await fs.open(p.log, 'w+');
    const offsetIndex = await OffsetIndex.open(p.index);
    const timeIndex = await TimeIndex.open(p.timeIndex);
    // replaceAll, not truncateTo: it also empties a file that holds only a torn entry.
    await offsetIndex.replaceAll([], []);
    await timeIndex.replaceAll([], []);
    return new LogSegment(dir, baseOffset, fh, offsetIndex, timeIndex, indexIntervalBytes);
  }

  /**
   * Opens an existing segment and validates it batch by batch: from the start ('full', after
   * an unclean shutdown, and whenever the index files disagree with the .log) or from the last
   * index entry ('tail'). The first batch that is torn, fails its CRC, or does not continue
   * the offsets ends the segment: the file is truncated there and the indexes rebuilt.
   * `onBatch` sees every batch of a full validation (none of a tail validation).
   */
  static async open(
    dir: string,
    baseOffset: number,
    indexIntervalBytes: number,
    mode: 'full' | 'tail',
    onBatch?: BatchVisitor,
  ): Promise<{ segment: LogSegment; recovery: SegmentRecovery }> {
    const p = LogSegment.filePaths(dir, baseOffset);
    const fh = await fs.open(p.log, 'r+');
    const offsetIndex = await OffsetIndex.open(p.index);
    const timeIndex = await TimeIndex.open(p.timeIndex);
    const segment = new LogSegment(dir, baseOffset, fh, offsetIndex, timeIndex, indexIntervalBytes);
    try {
      const recovery = await segment.recover(mode, onBatch);
      return { segment, recovery };
    } catch (e) {
      await segment.close().catch(() => undefined);
      throw e;
    }
  }

  get isEmpty(): boolean {
    return this.sizeBytes === 0;
  }

  get lastOffset(): number {
    return this.nextOffset - 1;
  }

  get indexEntryCount(): number {
    return this.offsetIndex.count;
  }

  // ---- recovery ----

  private async recover(mode: 'full' | 'tail', onBatch?: BatchVisitor): Promise<SegmentRecovery> {
    const fileSize = (await this.fh.stat()).size;
    const full: ScanStart = { position: 0, offset: this.baseOffset, maxTimestampMs: -1, keptEntries: 0 };
    let start = full;
    if (mode === 'tail' && this.indexesConsistent(fileSize)) {
      const k = this.offsetIndex.count - 1;
      if (k >= 0) {
        start = {
          position: this.offsetIndex.value(k),
          offset: this.baseOffset + this.offsetIndex.key(k),
          maxTimestampMs: this.timeIndex.key(k),
          keptEntries: k + 1,
        };
      }
    }
    let scan = await this.scan(start, fileSize, start === full ? onBatch : undefined);
    // An index entry that points at a batch the .log does not hold (the index write reached
    // the disk, the batch did not): the indexes cannot be trusted, rebuild from the start.
    if (start !== full && scan.endPosition === start.position && scan.problem !== undefined) {
      start = full;
      scan = await this.scan(full, fileSize, onBatch);
    }
    const validated = start === full ? 'full' : 'tail';
    const truncatedBytes = fileSize - scan.endPosition;
    if (truncatedBytes > 0) await this.fh.truncate(scan.endPosition);
    this.sizeBytes = scan.endPosition;
    this.nextOffset = scan.nextOffset;
    this.maxTimestampMs = scan.maxTimestampMs;
    const keys = [...Array(start.keptEntries).keys()];
    const offsetKeys = keys.map((i) => this.offsetIndex.key(i)).concat(scan.newEntries.map((e) => e.relativeOffset));
    const positions = keys.map((i) => this.offsetIndex.value(i)).concat(scan.newEntries.map((e) => e.position));
    const times = keys.map((i) => this.timeIndex.key(i)).concat(scan.newEntries.map((e) => e.maxTimestampMs));
    // Rewrite the files only when what the .log says differs from what they hold.
    const o = this.offsetIndex;
    const t = this.timeIndex;
    const same =
      o.wholeFile &&
      t.wholeFile &&
      o.count === offsetKeys.length &&
      t.count === offsetKeys.length &&
      offsetKeys.every((k, i) => o.key(i) === k && o.value(i) === positions[i] && t.key(i) === times[i] && t.value(i) === k);
    const rewrite = !same;
    if (rewrite) {
      await this.offsetIndex.replaceAll(offsetKeys, positions);
      await this.timeIndex.replaceAll(times, offsetKeys);
    }
    this.lastIndexedPosition = positions.length > 0 ? positions[positions.length - 1]! : 0;
    return {
      validated,
      truncatedBytes,
      ...(truncatedBytes > 0 ? { truncatedAtPosition: scan.endPosition, reason: scan.problem } : {}),
      indexesRewritten: rewrite,
    };
  }

  /** The index files describe a plausible prefix of this .log (else: rebuild them). */
  private indexesConsistent(fileSize: number): boolean {
    const o = this.offsetIndex;
    const t = this.timeIndex;
    if (!o.wholeFile || !t.wholeFile || o.count !== t.count) return false;
    for (let i = 0; i < o.count; i++) {
      const rel = o.key(i);
      const pos = o.value(i);
      if (rel < 1 || pos < 1 || pos >= fileSize || t.value(i) !== rel || t.key(i) < 0) return false;
      if (i > 0 && (rel <= o.key(i - 1) || pos <= o.value(i - 1) || t.key(i) < t.key(i - 1))) return false;
    }
    return true;
  }

  /** Validates batches from `start` to the end of the file; stops at the first bad one. */
  private async scan(
    start: ScanStart,
    fileSize: number,
    onBatch?: BatchVisitor,
  ): Promise<{
    endPosition: number;
    nextOffset: number;
    maxTimestampMs: number;
    problem?: string;
    newEntries: { relativeOffset: number; position: number; maxTimestampMs: number }[];
  }> {
    const reader = new FileWindow(this.fh, fileSize);
    let pos = start.position;
    let expected = start.offset;
    let maxTimestampMs = start.maxTimestampMs;
    let prevEpoch = -1;
    let lastIndexed = start.keptEntries > 0 ? start.position : 0;
    const newEntries: { relativeOffset: number; position: number; maxTimestampMs: number }[] = [];
    let problem: string | undefined;
    while (pos < fileSize) {
      const head = await reader.view(pos, BATCH_HEADER_BYTES);
      const h = tryReadBatchHeader(head, 0);
      if (typeof h === 'string') {
        problem = h;
        break;
      }
      problem = this.batchProblem(h, pos, fileSize, expected, prevEpoch);
      if (problem !== undefined) break;
      const bytes = await reader.view(pos, h.sizeBytes);
      if (!batchCrcMatches(bytes, 0, h)) {
        problem = `CRC32C mismatch in the batch at offset ${h.baseOffset}`;
        break;
      }
      maxTimestampMs = Math.max(maxTimestampMs, h.maxTimestampMs);
      if (pos - lastIndexed >= this.indexIntervalBytes) {
        newEntries.push({ relativeOffset: h.baseOffset - this.baseOffset, position: pos, maxTimestampMs });
        lastIndexed = pos;
      }
      onBatch?.(h, pos);
      prevEpoch = h.partitionLeaderEpoch;
      expected = h.lastOffset + 1;
      pos += h.sizeBytes;
    }
    return { endPosition: pos, nextOffset: expected, maxTimestampMs, ...(problem !== undefined ? { problem } : {}), newEntries };
  }

  private batchProblem(h: RecordBatchHeader, pos: number, fileSize: number, expected: number, prevEpoch: number): string | undefined {
    if (pos + h.sizeBytes > fileSize) return `torn batch: ${h.sizeBytes} bytes at position ${pos}, only ${fileSize - pos} in the file`;
    if (h.baseOffset !== expected) return `the batch at position ${pos} starts at offset ${h.baseOffset}, expected ${expected}`;
    if (h.recordCount !== h.lastOffsetDelta + 1) return `the batch at offset ${h.baseOffset} has ${h.recordCount} records and last offset delta ${h.lastOffsetDelta}`;
    if (h.lastOffset - this.baseOffset > MAX_RELATIVE_OFFSET) return `the batch at offset ${h.baseOffset} is beyond the segment's relative offset range`;
    if (h.partitionLeaderEpoch < 0 || h.partitionLeaderEpoch < prevEpoch) {
      return `the batch at offset ${h.baseOffset} has leader epoch ${h.partitionLeaderEpoch} after ${prevEpoch}`;
    }
    return undefined;
  }

  /** Calls `onBatch` for each batch header in [from, to) (headers only: no CRC). */
  async visitHeaders(from: number, to: number, onBatch: BatchVisitor): Promise<void> {
    const reader = new FileWindow(this.fh, to);
    let pos = from;
    while (pos < to) {
      const h = this.headerAt(await reader.view(pos, BATCH_HEADER_BYTES), pos);
      onBatch(h, pos);
      pos += h.sizeBytes;
    }
  }

  /** Every batch header of the segment, in order. */
  async visitAllHeaders(onBatch: BatchVisitor): Promise<void> {
    await this.visitHeaders(0, this.sizeBytes, onBatch);
  }

  private headerAt(head: Buffer, pos: number): RecordBatchHeader {
    const h = tryReadBatchHeader(head, 0);
    if (typeof h === 'string' || pos + h.sizeBytes > this.sizeBytes) {
      const why = typeof h === 'string' ? h : `batch of ${h.sizeBytes} bytes runs past the segment end`;
      throw new FlotillaError('CORRUPT_RECORD', `segment ${segmentFileStem(this.baseOffset)} position ${pos}: ${why}`, {
        segmentBaseOffset: this.baseOffset,
        position: pos,
      });
    }
    return h;
  }

  // ---- append ----

  /**
   * Appends validated batches at the end with one write: `bytes` is the batches back to back,
   * `headers` theirs in order. The caller (PartitionLog) has checked the batches (CRC, rules,
   * size), that they start at nextOffset and continue each other, and that they fit the
   * segment.
   */
  async append(bytes: Buffer, headers: readonly RecordBatchHeader[], nowMs: number): Promise<void> {
    const first = headers[0]!;
    const lastHeader = headers[headers.length - 1]!;
    assert(first.baseOffset === this.nextOffset, `segment ${this.baseOffset}: append at ${first.baseOffset}, expected ${this.nextOffset}`);
    assert(lastHeader.lastOffset - this.baseOffset <= MAX_RELATIVE_OFFSET, 'batch beyond the relative offset range');
    assert(this.sizeBytes + bytes.length - lastHeader.sizeBytes <= MAX_RELATIVE_OFFSET, 'segment position beyond int32');
    assert(headers.reduce((n, h) => n + h.sizeBytes, 0) === bytes.length, 'the headers do not describe the bytes');
    await writeFully(this.fh, bytes, this.sizeBytes);
    this.rollStartMs ??= nowMs;
    for (const h of headers) {
      const position = this.sizeBytes;
      this.sizeBytes += h.sizeBytes;
      this.nextOffset = h.lastOffset + 1;
      this.maxTimestampMs = Math.max(this.maxTimestampMs, h.maxTimestampMs);
      if (position - this.lastIndexedPosition >= this.indexIntervalBytes) {
        // In memory only: the files are written in batches (segment-index.ts), off this path.
        const rel = h.baseOffset - this.baseOffset;
        this.offsetIndex.append(rel, position);
        this.timeIndex.append(this.maxTimestampMs, rel);
        this.lastIndexedPosition = position;
      }
    }
    if (this.offsetIndex.pendingCount >= INDEX_WRITE_BATCH_ENTRIES) await this.writeIndexes();
  }

  /** Writes the index entries not yet in their files (no fsync). */
  async writeIndexes(): Promise<void> {
    await this.offsetIndex.writePending();
    await this.timeIndex.writePending();
  }

  // ---- lookups ----

  /**
   * The position and header of the batch holding `offset` (in [baseOffset, nextOffset)):
   * a binary search of the offset index, then a walk of at most one index interval.
   */
  async locate(offset: number): Promise<{ position: number; header: RecordBatchHeader }> {
    assert(offset >= this.baseOffset && offset < this.nextOffset, `offset ${offset} is not in segment [${this.baseOffset}, ${this.nextOffset})`);
    const i = this.offsetIndex.floorEntry(offset - this.baseOffset);
    let pos = i < 0 ? 0 : this.offsetIndex.value(i);
    const reader = new FileWindow(this.fh, this.sizeBytes, 16 * 1024);
    while (pos < this.sizeBytes) {
      const h = this.headerAt(await reader.view(pos, BATCH_HEADER_BYTES), pos);
      if (h.lastOffset >= offset) {
        if (h.baseOffset > offset) break;
        return { position: pos, header: h };
      }
      pos += h.sizeBytes;
    }
    throw new FlotillaError('CORRUPT_RECORD', `segment ${segmentFileStem(this.baseOffset)}: no batch holds offset ${offset}`, {
      segmentBaseOffset: this.baseOffset,
      offset,
    });
  }

  /**
   * Whole batches from `position`: at least the first one (even when it alone exceeds
   * maxBytes, so a reader always progresses), then as many as fit in maxBytes, none holding an
   * offset at or above `maxOffsetExclusive`. Every batch returned passed its CRC and continues
   * the offsets of the one before; a bad first batch is CORRUPT_RECORD, a bad later batch ends
   * the result before it (the next read starting there reports it).
   */
  async read(
    position: number,
    firstOffset: number,
    maxBytes: number,
    maxOffsetExclusive: number,
  ): Promise<{ bytes: Buffer; nextOffset: number; problem?: string }> {
    const reader = new FileWindow(this.fh, this.sizeBytes, 0);
    const first = this.headerAt(await reader.view(position, BATCH_HEADER_BYTES), position);
    const length = Math.min(this.sizeBytes - position, Math.max(maxBytes, first.sizeBytes));
    const buf = await reader.view(position, length);
    let pos = 0;
    let next = firstOffset;
    let prevEpoch = -1;
    while (pos < buf.length) {
      const h = tryReadBatchHeader(buf, pos);
      let problem: string | undefined;
      if (typeof h === 'string') {
        if (buf.length - pos < BATCH_HEADER_BYTES && pos > 0) break; // the next batch did not fit
        problem = h;
      } else {
        if (pos + h.sizeBytes > buf.length) {
          if (pos > 0) break; // did not fit in maxBytes
          problem = 'batch runs past the segment end';
        } else if (h.lastOffset >= maxOffsetExclusive) {
          break;
        } else if (pos > 0 && h.baseOffset !== next) {
          problem = `batch starts at offset ${h.baseOffset}, expected ${next}`;
        } else if (h.partitionLeaderEpoch < prevEpoch) {
          problem = `leader epoch ${h.partitionLeaderEpoch} after ${prevEpoch}`;
        } else if (!batchCrcMatches(buf, pos, h)) {
          problem = `CRC32C mismatch in the batch at offset ${h.baseOffset}`;
        }
      }
      if (problem !== undefined) {
        if (pos === 0) {
          throw new FlotillaError('CORRUPT_RECORD', `segment ${segmentFileStem(this.baseOffset)} position ${position}: ${problem}`, {
            segmentBaseOffset: this.baseOffset,
            position,
          });
        }
        return { bytes: buf.subarray(0, pos), nextOffset: next, problem };
      }
      const header = h as RecordBatchHeader;
      prevEpoch = header.partitionLeaderEpoch;
      next = header.lastOffset + 1;
      pos += header.sizeBytes;
    }
    return { bytes: buf.subarray(0, pos), nextOffset: next };
  }

  /**
   * The first record (by offset) with a timestamp >= `timestampMs`, or undefined when the
   * segment has none: a binary search of the time index, then a walk of at most one interval
   * (the next entry's batch already holds such a record).
   */
  async findByTimestamp(timestampMs: number): Promise<{ offset: number; timestampMs: number } | undefined> {
    if (this.maxTimestampMs < timestampMs) return undefined;
    const i = this.timeIndex.lastEntryBefore(timestampMs);
    let pos = i < 0 ? 0 : this.offsetIndex.value(i);
    const reader = new FileWindow(this.fh, this.sizeBytes, 16 * 1024);
    while (pos < this.sizeBytes) {
      const h = this.headerAt(await reader.view(pos, BATCH_HEADER_BYTES), pos);
      if (h.maxTimestampMs >= timestampMs) {
        const batch = decodeRecordBatch(Buffer.from(await reader.view(pos, h.sizeBytes)));
        const r = batch.records.find((x) => x.timestampMs >= timestampMs);
        if (r !== undefined) return { offset: r.offset, timestampMs: r.timestampMs };
      }
      pos += h.sizeBytes;
    }
    return undefined;
  }

  // ---- truncation, flush, close ----

  /**
   * Removes the batch holding `offset` and everything after it; returns the new nextOffset
   * (the base of that batch: <= offset when `offset` falls inside a batch).
   */
  async truncateTo(offset: number): Promise<number> {
    if (offset >= this.nextOffset) return this.nextOffset;
    const { position, header } = await this.locate(Math.max(offset, this.baseOffset));
    await this.fh.truncate(position);
    this.sizeBytes = position;
    this.nextOffset = header.baseOffset;
    const kept = this.offsetIndex.firstAtOrAfterPosition(position);
    await this.offsetIndex.truncateTo(kept);
    await this.timeIndex.truncateTo(kept);
    this.lastIndexedPosition = kept > 0 ? this.offsetIndex.value(kept - 1) : 0;
    let maxTs = kept > 0 ? this.timeIndex.key(kept - 1) : -1;
    await this.visitHeaders(this.lastIndexedPosition, position, (h) => {
      maxTs = Math.max(maxTs, h.maxTimestampMs);
    });
    this.maxTimestampMs = maxTs;
    if (this.isEmpty) this.rollStartMs = undefined;
    return this.nextOffset;
  }

  /** fsync the .log and both indexes (their pending entries written first). */
  async sync(): Promise<void> {
    await this.fh.sync();
    await this.offsetIndex.sync();
    await this.timeIndex.sync();
  }

  /** Closes the files, writing pending index entries first unless `discard`. */
  async close(discard = false): Promise<void> {
    await this.fh.close();
    await this.offsetIndex.close(discard);
    await this.timeIndex.close(discard);
  }

  /** Closes and unlinks the files: the .log first, so a crash leaves only orphan indexes. */
  async closeAndDelete(): Promise<void> {
    await this.close(true);
    const p = LogSegment.filePaths(this.dir, this.baseOffset);
    await unlinkIfPresent(p.log);
    await unlinkIfPresent(p.index);
    await unlinkIfPresent(p.timeIndex);
  }
}
