import { strict as assert } from 'node:assert';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { FlotillaError, isFlotillaError } from '../../shared/errors/error-codes';
import { silentLogger } from '../../shared/log';
import type { Logger } from '../../shared/log';
import { fsyncDir, isIoError, unlinkIfPresent, writeFileDurably } from './file-io';
import { DEFAULT_LOG_CONFIG, LogConfig, checkLogConfig } from './log-config';
import { EpochEndOffset, EpochEntry, LEADER_EPOCH_CHECKPOINT_FILE, LeaderEpochCache } from './leader-epoch-cache';
import { TailCache } from './tail-cache';
import { LogSegment, MAX_RELATIVE_OFFSET, parseSegmentFileName, segmentFileStem } from './log-segment';
import { RecordBatchHeader, setLogAppendTime, splitBatches, stampBatch, validateRecordBatch } from '../../shared/records/record-batch';

// The log of one partition replica (Kafka's UnifiedLog/LocalLog): a directory of segments,
// the leader-epoch checkpoint and, after a clean close, a clean-shutdown marker.
//
//   <dir>/00000000000000000000.log .index .timeindex   segment at base offset 0
//   <dir>/00000000000000004096.log .index .timeindex   the active (last) segment
//   <dir>/leader-epoch-checkpoint                      leader-epoch-cache.ts
//   <dir>/clean-shutdown                               present only between close and open
//
// Offsets are contiguous from logStartOffset (the first segment's base offset) to
// logEndOffset (exclusive): there is no compaction, so every offset in between is a record.
//
// One operation at a time: every public async method runs on an internal serial queue, so an
// append, a read and a truncation never interleave (a read waits for an append's fsync when
// the flush policy asks for one). The getters are synchronous and show the state after the
// last completed operation.
//
// Crash safety (broker/log/README.md "Recovery"): closed segments are fsynced when they roll,
// so only the active segment can hold a torn or partly written tail. On open, after an
// unclean shutdown the whole active segment is validated batch by batch (framing, CRC32C,
// contiguous offsets, non-decreasing epochs) and cut at the first bad batch, its indexes
// rebuilt; after a clean close only the batches after its last index entry are. Every
// segment's index files are checked against its .log and rebuilt when they disagree.
//
// Reads at the log end (followers, caught-up consumers) are served from the active segment's
// in-memory tail of the newest batches when it holds the offset asked for (bounded by
// tailCacheBytes; the same bytes the file would give: README "The in-memory tail").
//
// The high watermark is held here, in memory only: the replica manager owns its value (it
// advances it from follower fetches and checkpoints it, as Kafka's replication-offset-
// checkpoint), sets it with setHighWatermark after open, and reads with isolation
// 'highWatermark' for consumers. The log keeps it within [logStartOffset, logEndOffset]
// through truncation and retention.
//
// Errors: bad input is a FlotillaError and leaves the log unchanged (every batch is validated
// before the first byte is written). An I/O error takes the log offline: that call and every
// later one fail with STORAGE_ERROR (retriable: another replica can lead) until it is reopened,
// which recovers it.

export const CLEAN_SHUTDOWN_FILE = 'clean-shutdown';
const INT32_MAX = 0x7fffffff;

export interface PartitionLogOptions {
  /** The partition's directory (created when missing). */
  readonly dir: string;
  /** Overrides of DEFAULT_LOG_CONFIG (see log-config.ts). */
  readonly config?: Partial<LogConfig>;
  /** Wall clock in ms, for segment.ms, retention.ms and flush.ms. Default Date.now. */
  readonly nowMs?: () => number;
  readonly logger?: Logger;
}

export interface AppendOptions {
  /**
   * true on the leader: the batches get offsets from the log end and `leaderEpoch` stamped
   * in. false on a follower: the batches keep the offsets and epochs the leader gave them,
   * and must continue the log exactly (UNEXPECTED_APPEND_OFFSET otherwise).
   */
  readonly assignOffsets: boolean;
  /**
   * The leader's epoch: the one stamped on a leader; on a follower, the epoch of the leader it
   * fetches from, which no batch may exceed.
   */
  readonly leaderEpoch: number;
}

export interface AppendResult {
  readonly firstOffset: number;
  readonly lastOffset: number;
  readonly logEndOffset: number;
  readonly batchCount: number;
  readonly recordCount: number;
  /** The largest record timestamp appended. */
  readonly maxTimestampMs: number;
  /** The append ended with an fsync of the active segment (flush policy). */
  readonly flushed: boolean;
  /** The leader's append time written into the batches (LogAppendTime topics); -1 otherwise. */
  readonly logAppendTimeMs: number;
}

/** 'logEnd' for followers; 'highWatermark' for consumers (only committed records). */
export type ReadIsolation = 'logEnd' | 'highWatermark';

export interface LogReadResult {
  /**
   * Whole batches back to back, each CRC-checked on this read; empty at the end of the log.
   * The first batch holds the offset asked for (it may start before it, as in Kafka).
   */
  readonly records: Buffer;
  /** The offset after the last batch returned; the offset asked for when none was. */
  readonly nextOffset: number;
  readonly logStartOffset: number;
  readonly logEndOffset: number;
  readonly highWatermark: number;
}

export interface TimestampOffset {
  readonly offset: number;
  readonly timestampMs: number;
}

export interface RetentionResult {
  readonly deletedSegments: number;
  readonly deletedBytes: number;
  readonly logStartOffset: number;
}

export class PartitionLog {
  private hw: number;
  private flushedOffset: number;
  private unflushedRecords = 0;
  private lastFlushMs: number;
  /** prefixMaxTimestamp[i] = the largest record timestamp in segments 0..i (-1 when none). */
  private prefixMaxTimestamp: number[] = [];
  private queue: Promise<void> = Promise.resolve();
  private tailReads = 0;
  private readonly tail = new TailCache();
  private failure: Error | undefined;
  private closed = false;

  private constructor(
    readonly dir: string,
    private cfg: LogConfig,
    private segments: LogSegment[],
    private readonly epochs: LeaderEpochCache,
    private readonly nowMs: () => number,
    private readonly logger: Logger,
  ) {
    this.hw = this.logStartOffset;
    this.flushedOffset = this.logEndOffset;
    this.lastFlushMs = nowMs();
    this.refreshTimestampPrefix();
  }

  /** Opens (or creates) the log in `dir`, recovering it: see the header comment. */
  static async open(o: PartitionLogOptions): Promise<PartitionLog> {
    const config = checkLogConfig({ ...DEFAULT_LOG_CONFIG, ...o.config });
    const logger = o.logger ?? silentLogger();
    const nowMs = o.nowMs ?? Date.now;
    try {
      await fs.mkdir(o.dir, { recursive: true });
      const segments = await openSegments(o.dir, config, logger);
      const epochs = await openEpochCache(o.dir, segments.list, segments.recoveredEpochStarts, logger);
      const log = new PartitionLog(o.dir, config, segments.list, epochs, nowMs, logger);
      // What recovery kept is now the durable state (it may have been read from the page
      // cache). Not needed after a clean close that recovery left as it was: 3 fsyncs per
      // partition saved on a clean restart of a broker with thousands of them.
      if (!segments.durableAsFound) await log.active.sync();
      logger.info(
        { dir: o.dir, logStartOffset: log.logStartOffset, logEndOffset: log.logEndOffset, segments: segments.list.length },
        `opened partition log ${o.dir}: offsets [${log.logStartOffset}, ${log.logEndOffset})`,
      );
      return log;
    } catch (e) {
      if (isIoError(e)) throw new FlotillaError('STORAGE_ERROR', `cannot open partition log ${o.dir}: ${e.message}`, { dir: o.dir }, { cause: e });
      throw e;
    }
  }

  // ---- state ----

  /** The settings in force (see reconfigure). */
  get config(): LogConfig {
    return this.cfg;
  }

  /**
   * Replaces the settings (a topic config change). Applies from the next operation on:
   * segment.bytes/segment.ms at the next roll, max.message.bytes at the next append,
   * retention at the next deleteOldSegments, flush at the next append or maybeFlush,
   * tailCacheBytes at the next append.
   */
  reconfigure(config: Partial<LogConfig>): Promise<LogConfig> {
    const next = checkLogConfig({ ...this.cfg, ...config });
    return this.run(async () => {
      this.cfg = next;
      return next;
    });
  }

  /** The first offset in the log (moves up with retention). */
  get logStartOffset(): number {
    return this.segments[0]!.baseOffset;
  }

  /** The offset the next record will get (exclusive end of the log). */
  get logEndOffset(): number {
    return this.active.nextOffset;
  }

  /** See the header comment: held here for the replica manager, not persisted. */
  get highWatermark(): number {
    return this.hw;
  }

  /** Every offset below this is fsynced (Kafka's recovery point). */
  get durableOffset(): number {
    return this.flushedOffset;
  }

  get sizeBytes(): number {
    return this.segments.reduce((n, s) => n + s.sizeBytes, 0);
  }

  /** Reads served from the in-memory tail since open (the rest read the files). */
  get readsFromMemory(): number {
    return this.tailReads;
  }

  /** Bytes of batches held in the in-memory tail (at most tailCacheBytes). */
  get tailCachedBytes(): number {
    return this.tail.sizeBytes;
  }

  /** Base offsets of the segments, oldest first (the last is the active one). */
  segmentBaseOffsets(): number[] {
    return this.segments.map((s) => s.baseOffset);
  }

  /** The latest leader epoch with data in the log, or -1. */
  get latestEpoch(): number {
    return this.epochs.latestEpoch;
  }

  /** The leader-epoch cache entries, oldest first. */
  epochEntries(): EpochEntry[] {
    return this.epochs.list();
  }

  /** OffsetsForLeaderEpoch (KIP-101/KIP-279): see LeaderEpochCache.endOffsetFor. */
  endOffsetForEpoch(epoch: number): EpochEndOffset {
    return this.epochs.endOffsetFor(epoch, this.logEndOffset);
  }

  /**
   * Sets the high watermark, clamped to [logStartOffset, logEndOffset]; returns the value
   * kept. It may go down (a follower after truncation); the replica manager decides.
   */
  setHighWatermark(offset: number): number {
    assert(Number.isSafeInteger(offset), `high watermark ${offset}`);
    this.hw = Math.min(Math.max(offset, this.logStartOffset), this.logEndOffset);
    return this.hw;
  }

  private get active(): LogSegment {
    return this.segments[this.segments.length - 1]!;
  }

  // ---- append ----

  /**
   * Appends a record set (one or more whole batches). Everything is validated first — framing
   * and CRC32C (CORRUPT_RECORD), size (RECORD_TOO_LARGE against max.message.bytes), the batch
   * rules (INVALID_RECORD), and epochs and offsets (FENCED_LEADER_EPOCH,
   * UNEXPECTED_APPEND_OFFSET) — so a refused append leaves the log unchanged.
   */
  append(records: Buffer, options: AppendOptions): Promise<AppendResult> {
    return this.run(async () => {
      const { assignOffsets, leaderEpoch } = options;
      assert(Number.isSafeInteger(leaderEpoch) && leaderEpoch >= 0 && leaderEpoch <= INT32_MAX, `leader epoch ${leaderEpoch}`);
      // Our own copy: a leader stamps offsets into it, and the caller may reuse its buffer.
      // allocUnsafe + copy, not Buffer.from(records): that zero-fills first (2-3x the CPU).
      const buf = Buffer.allocUnsafe(records.length);
      records.copy(buf);
      const slices = splitBatches(buf);
      if (slices.length === 0) throw new FlotillaError('INVALID_RECORD', 'an append needs at least one record batch');
      const headers: RecordBatchHeader[] = [];
      for (const slice of slices) {
        if (slice.length > this.config.maxMessageBytes) {
          throw new FlotillaError(
            'RECORD_TOO_LARGE',
            `a record batch of ${slice.length} bytes exceeds max.message.bytes ${this.config.maxMessageBytes}`,
            { sizeBytes: slice.length, maxMessageBytes: this.config.maxMessageBytes },
          );
        }
        headers.push(validateRecordBatch(slice));
      }
      const now = this.nowMs();
      const logAppendTimeMs = assignOffsets && this.config.messageTimestampType === 'LogAppendTime' ? now : -1;
      if (assignOffsets) this.assignOffsets(slices, headers, leaderEpoch, logAppendTimeMs);
      else this.checkReplicatedOffsets(headers, leaderEpoch);

      let recordCount = 0;
      let maxTimestampMs = -1;
      let i = 0;
      while (i < slices.length) {
        await this.maybeRoll(headers[i]!, now);
        // The batches from i that go into this segment without another roll: one write.
        const seg = this.active;
        let end = i + 1;
        let size = seg.sizeBytes + headers[i]!.sizeBytes;
        while (end < slices.length && !this.needsRoll(seg, size, headers[end]!, now)) size += headers[end++]!.sizeBytes;
        // The checkpoint is durable before the batches are written: a crash can leave an epoch
        // that starts past the log end (dropped on open), never a batch of an unknown epoch.
        for (let k = i; k < end; k++) {
          const h = headers[k]!;
          if (h.partitionLeaderEpoch > this.epochs.latestEpoch) await this.epochs.assign(h.partitionLeaderEpoch, h.baseOffset);
        }
        // splitBatches returns back-to-back subarrays of buf, so the group is one range of it.
        const from = slices[i]!.byteOffset - buf.byteOffset;
        const last = slices[end - 1]!;
        await seg.append(buf.subarray(from, last.byteOffset - buf.byteOffset + last.length), headers.slice(i, end), now);
        for (let k = i; k < end; k++) {
          const h = headers[k]!;
          this.tail.add(slices[k]!, h.baseOffset, h.lastOffset, this.config.tailCacheBytes);
          recordCount += h.recordCount;
          maxTimestampMs = Math.max(maxTimestampMs, h.maxTimestampMs);
        }
        i = end;
      }
      this.updateActiveTimestampPrefix();
      this.unflushedRecords += recordCount;
      let flushed = false;
      if (this.unflushedRecords >= this.config.flushMessages || now - this.lastFlushMs >= this.config.flushMs) {
        await this.flushActive(now);
        flushed = true;
      }
      return {
        firstOffset: headers[0]!.baseOffset,
        lastOffset: headers[headers.length - 1]!.lastOffset,
        logEndOffset: this.logEndOffset,
        batchCount: slices.length,
        recordCount,
        maxTimestampMs,
        flushed,
        logAppendTimeMs,
      };
    });
  }

  /** Stamps offsets and the epoch; with `logAppendTimeMs` >= 0 also the append time (and a new CRC). */
  private assignOffsets(slices: Buffer[], headers: RecordBatchHeader[], leaderEpoch: number, logAppendTimeMs: number): void {
    if (leaderEpoch < this.epochs.latestEpoch) {
      throw new FlotillaError(
        'FENCED_LEADER_EPOCH',
        `leader epoch ${leaderEpoch} is older than epoch ${this.epochs.latestEpoch} already in the log`,
        { leaderEpoch, latestEpoch: this.epochs.latestEpoch },
      );
    }
    let next = this.logEndOffset;
    for (let i = 0; i < slices.length; i++) {
      const h = headers[i]!;
      stampBatch(slices[i]!, 0, next, leaderEpoch);
      headers[i] = { ...h, baseOffset: next, lastOffset: next + h.lastOffsetDelta, partitionLeaderEpoch: leaderEpoch };
      if (logAppendTimeMs >= 0) {
        setLogAppendTime(slices[i]!, 0, h.sizeBytes, logAppendTimeMs);
        headers[i] = { ...headers[i]!, maxTimestampMs: logAppendTimeMs, attributes: slices[i]!.readInt16BE(21) };
      }
      next += h.recordCount;
    }
  }

  private checkReplicatedOffsets(headers: RecordBatchHeader[], leaderEpoch: number): void {
    let expected = this.logEndOffset;
    let prevEpoch = this.epochs.latestEpoch;
    for (const h of headers) {
      if (h.baseOffset !== expected) {
        throw new FlotillaError(
          'UNEXPECTED_APPEND_OFFSET',
          `a replicated batch starts at offset ${h.baseOffset}, the log continues at ${expected}`,
          { baseOffset: h.baseOffset, expectedOffset: expected },
        );
      }
      const epoch = h.partitionLeaderEpoch;
      if (epoch < 0 || epoch < prevEpoch || epoch > leaderEpoch) {
        throw new FlotillaError(
          'INVALID_RECORD',
          `a replicated batch at offset ${h.baseOffset} has leader epoch ${epoch}: it must be from ${Math.max(prevEpoch, 0)} to the current ${leaderEpoch}`,
          { baseOffset: h.baseOffset, batchEpoch: epoch, leaderEpoch },
        );
      }
      prevEpoch = epoch;
      expected = h.lastOffset + 1;
    }
  }

  /**
   * Whether `h` must start a new segment when `seg` (non-empty) holds `sizeBytes`: it would
   * pass segment.bytes, the segment is older than segment.ms, or `h` is out of its offsets.
   */
  private needsRoll(seg: LogSegment, sizeBytes: number, h: RecordBatchHeader, nowMs: number): boolean {
    const full = sizeBytes + h.sizeBytes > this.config.segmentBytes;
    const old = seg.rollStartMs !== undefined && nowMs - seg.rollStartMs >= this.config.segmentMs;
    const offsets = h.lastOffset - seg.baseOffset > MAX_RELATIVE_OFFSET;
    return full || old || offsets;
  }

  /** Starts a new segment before `h` when the active one is full, old, or out of offsets. */
  private async maybeRoll(h: RecordBatchHeader, nowMs: number): Promise<void> {
    const seg = this.active;
    if (seg.isEmpty || !this.needsRoll(seg, seg.sizeBytes, h, nowMs)) return;
    const full = seg.sizeBytes + h.sizeBytes > this.config.segmentBytes;
    const old = seg.rollStartMs !== undefined && nowMs - seg.rollStartMs >= this.config.segmentMs;
    // A closed segment is durable: recovery validates only the tail of closed segments.
    await seg.sync();
    // The tail covers the active segment only; readers still on this one use the file.
    this.tail.clear();
    this.flushedOffset = seg.nextOffset;
    this.unflushedRecords = 0;
    this.lastFlushMs = nowMs;
    const next = await LogSegment.create(this.dir, h.baseOffset, this.config.indexIntervalBytes);
    await fsyncDir(this.dir);
    this.segments.push(next);
    this.prefixMaxTimestamp.push(this.prefixMaxTimestamp[this.prefixMaxTimestamp.length - 1] ?? -1);
    this.logger.debug(
      { dir: this.dir, baseOffset: h.baseOffset, reason: full ? 'segment.bytes' : old ? 'segment.ms' : 'offset range' },
      `rolled to segment ${segmentFileStem(h.baseOffset)}`,
    );
  }

  // ---- read ----

  /**
   * Whole, validated batches from `fromOffset`, up to about maxBytes (at least one batch, so a
   * reader always progresses) and within one segment. OFFSET_OUT_OF_RANGE below
   * logStartOffset or above logEndOffset; at the end (or, with 'highWatermark', at or past the
   * high watermark) the result is empty. A batch that fails its CRC is CORRUPT_RECORD when it
   * is the first, and ends the result otherwise: bytes that were not validated never leave.
   */
  read(fromOffset: number, maxBytes: number, isolation: ReadIsolation = 'logEnd'): Promise<LogReadResult> {
    return this.run(async () => {
      if (!Number.isSafeInteger(maxBytes) || maxBytes < 1) {
        throw new FlotillaError('INVALID_REQUEST', `maxBytes ${maxBytes}: must be a positive integer`);
      }
      this.checkOffsetInRange(fromOffset);
      const upper = isolation === 'highWatermark' ? this.hw : this.logEndOffset;
      const result = (records: Buffer, nextOffset: number): LogReadResult => ({
        records,
        nextOffset,
        logStartOffset: this.logStartOffset,
        logEndOffset: this.logEndOffset,
        highWatermark: this.hw,
      });
      if (fromOffset >= upper) return result(Buffer.alloc(0), fromOffset);
      const seg = this.segmentFor(fromOffset);
      // Followers and caught-up consumers read the newest batches: serve them from memory.
      const fromTail = seg === this.active ? this.tail.read(fromOffset, maxBytes, upper, this.logEndOffset) : undefined;
      if (fromTail !== undefined) {
        this.tailReads++;
        return result(fromTail.bytes, fromTail.nextOffset);
      }
      const { position } = await seg.locate(fromOffset);
      const r = await seg.read(position, fromOffset, maxBytes, upper);
      if (r.problem !== undefined) {
        this.logger.warn({ dir: this.dir, offset: r.nextOffset, problem: r.problem }, `read stopped before a bad batch at offset ${r.nextOffset}`);
      }
      return result(r.bytes, r.nextOffset);
    });
  }

  private checkOffsetInRange(offset: number): void {
    if (!Number.isSafeInteger(offset) || offset < this.logStartOffset || offset > this.logEndOffset) {
      throw new FlotillaError(
        'OFFSET_OUT_OF_RANGE',
        `offset ${offset} is outside the log [${this.logStartOffset}, ${this.logEndOffset}]`,
        { offset: Number.isSafeInteger(offset) ? offset : String(offset), logStartOffset: this.logStartOffset, logEndOffset: this.logEndOffset },
      );
    }
  }

  /** The segment holding `offset` (binary search over base offsets). */
  private segmentFor(offset: number): LogSegment {
    let lo = 0;
    let hi = this.segments.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.segments[mid]!.baseOffset <= offset) lo = mid;
      else hi = mid - 1;
    }
    return this.segments[lo]!;
  }

  /**
   * The first offset (in offset order) whose record timestamp is >= `timestampMs`, with that
   * timestamp (Kafka's ListOffsets by time); null when no record is that recent. O(log n):
   * binary searches over the segments' running max timestamps and the segment's time index.
   */
  lookupByTimestamp(timestampMs: number): Promise<TimestampOffset | null> {
    return this.run(async () => {
      if (!Number.isSafeInteger(timestampMs)) throw new FlotillaError('INVALID_REQUEST', `timestamp ${timestampMs}: must be an integer`);
      // The first segment whose own max timestamp reaches the target is the first whose
      // running max does; the running max never decreases, so binary-search it.
      let lo = 0;
      let hi = this.segments.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (this.prefixMaxTimestamp[mid]! < timestampMs) lo = mid + 1;
        else hi = mid;
      }
      if (lo === this.segments.length) return null;
      const found = await this.segments[lo]!.findByTimestamp(timestampMs);
      assert(found !== undefined, `segment ${lo} has max timestamp >= ${timestampMs} but no such record`);
      return found;
    });
  }

  // ---- truncation ----

  /**
   * Removes every batch that holds an offset >= `offset` (a follower after a leader change,
   * to the end offset the leader gave for its epoch). The log then ends at `offset`, or lower
   * when `offset` falls inside a batch (whole batches only). At or past the end: no change.
   * Below logStartOffset: the log is emptied and restarts at `offset`. Returns the new end.
   */
  truncateTo(offset: number): Promise<number> {
    return this.run(async () => {
      assert(Number.isSafeInteger(offset) && offset >= 0, `truncate to ${offset}`);
      if (offset >= this.logEndOffset) return this.logEndOffset;
      if (offset < this.logStartOffset) {
        await this.restartAt(offset);
        return this.logEndOffset;
      }
      const before = this.logEndOffset;
      const keep = this.segments.indexOf(this.segmentFor(offset));
      // Newest first, so a crash in between leaves a contiguous prefix.
      while (this.segments.length > keep + 1) await this.segments.pop()!.closeAndDelete();
      await this.active.truncateTo(offset);
      this.tail.truncateFrom(this.logEndOffset);
      await this.active.sync();
      await fsyncDir(this.dir);
      await this.epochs.truncateFromEnd(this.logEndOffset);
      this.afterTruncation();
      this.logger.info({ dir: this.dir, from: before, to: this.logEndOffset }, `truncated the log from ${before} to ${this.logEndOffset}`);
      return this.logEndOffset;
    });
  }

  /**
   * Deletes everything and restarts the log, empty, at `offset` (a follower whose log end is
   * below the leader's log start: Kafka's truncateFullyAndStartAt).
   */
  truncateFullyAndStartAt(offset: number): Promise<void> {
    return this.run(async () => {
      assert(Number.isSafeInteger(offset) && offset >= 0, `start at ${offset}`);
      await this.restartAt(offset);
    });
  }

  private async restartAt(offset: number): Promise<void> {
    const before = { start: this.logStartOffset, end: this.logEndOffset };
    // Newest first: a crash in between leaves a contiguous (shorter) log, which the follower
    // reconciles with its leader again; never a gap.
    this.tail.clear();
    while (this.segments.length > 0) await this.segments.pop()!.closeAndDelete();
    await fsyncDir(this.dir);
    this.segments.push(await LogSegment.create(this.dir, offset, this.config.indexIntervalBytes));
    await fsyncDir(this.dir);
    await this.epochs.clear();
    this.afterTruncation();
    this.flushedOffset = offset;
    this.unflushedRecords = 0;
    this.logger.info({ dir: this.dir, ...before, startAt: offset }, `emptied the log [${before.start}, ${before.end}) and restarted it at ${offset}`);
  }

  private afterTruncation(): void {
    this.hw = Math.min(Math.max(this.hw, this.logStartOffset), this.logEndOffset);
    this.flushedOffset = Math.min(this.flushedOffset, this.logEndOffset);
    this.refreshTimestampPrefix();
  }

  // ---- retention ----

  /**
   * Retention: deletes the oldest closed segments (never the active one, only whole
   * segments) while the oldest is past retention.ms (its newest record older than that) or
   * the log without it is still >= retention.bytes. logStartOffset moves to the first segment
   * left. The caller runs this periodically (Kafka's log.retention.check.interval.ms).
   */
  deleteOldSegments(): Promise<RetentionResult> {
    return this.run(async () => {
      const now = this.nowMs();
      const { retentionMs, retentionBytes } = this.config;
      let remainingBytes = this.sizeBytes;
      let deleted = 0;
      let deletedBytes = 0;
      while (this.segments.length > 1) {
        const oldest = this.segments[0]!;
        const byTime = retentionMs !== Infinity && oldest.maxTimestampMs >= 0 && now - oldest.maxTimestampMs > retentionMs;
        const bySize = retentionBytes !== Infinity && remainingBytes - oldest.sizeBytes >= retentionBytes;
        if (!byTime && !bySize) break;
        this.segments.shift();
        await oldest.closeAndDelete();
        remainingBytes -= oldest.sizeBytes;
        deletedBytes += oldest.sizeBytes;
        deleted++;
        this.logger.info(
          { dir: this.dir, baseOffset: oldest.baseOffset, nextOffset: oldest.nextOffset, reason: byTime ? 'retention.ms' : 'retention.bytes' },
          `deleted segment ${segmentFileStem(oldest.baseOffset)} (offsets ${oldest.baseOffset}..${oldest.nextOffset - 1})`,
        );
      }
      if (deleted > 0) {
        await fsyncDir(this.dir);
        await this.epochs.truncateFromStart(this.logStartOffset);
        this.hw = Math.max(this.hw, this.logStartOffset);
        this.refreshTimestampPrefix();
      }
      return { deletedSegments: deleted, deletedBytes, logStartOffset: this.logStartOffset };
    });
  }

  // ---- flush and close ----

  /** fsync everything appended so far. */
  flush(): Promise<void> {
    return this.run(() => this.flushActive(this.nowMs()));
  }

  /** flush.ms: fsync when there is unflushed data and the last flush is that old. */
  maybeFlush(): Promise<boolean> {
    return this.run(async () => {
      const now = this.nowMs();
      if (this.flushedOffset >= this.logEndOffset || now - this.lastFlushMs < this.config.flushMs) return false;
      await this.flushActive(now);
      return true;
    });
  }

  private async flushActive(nowMs: number): Promise<void> {
    await this.active.sync();
    this.flushedOffset = this.logEndOffset;
    this.unflushedRecords = 0;
    this.lastFlushMs = nowMs;
  }

  /**
   * Flushes, closes the files and leaves the clean-shutdown marker (the next open then
   * validates only segment tails). After an I/O error it only closes the files.
   */
  async close(): Promise<void> {
    const done = this.queue.then(async () => {
      if (this.closed) return;
      this.closed = true;
      if (this.failure === undefined) {
        await this.flushActive(this.nowMs());
        await writeFileDurably(path.join(this.dir, CLEAN_SHUTDOWN_FILE), 'clean\n');
        await fsyncDir(this.dir);
      }
      this.tail.release();
      for (const s of this.segments) await s.close().catch(() => undefined);
    });
    this.queue = done.catch(() => undefined);
    await done;
  }

  // ---- helpers ----

  /** Runs `op` after every earlier operation; an I/O error takes the log offline. */
  private run<T>(op: () => Promise<T>): Promise<T> {
    const result = this.queue.then(async () => {
      assert(!this.closed, `partition log ${this.dir} is closed`);
      if (this.failure !== undefined) {
        throw new FlotillaError('STORAGE_ERROR', `partition log ${this.dir} is offline after an I/O error: ${this.failure.message}`, {
          dir: this.dir,
        });
      }
      try {
        return await op();
      } catch (e) {
        if (!isIoError(e) || isFlotillaError(e)) throw e;
        this.failure = e;
        this.logger.error({ dir: this.dir, err: e }, `partition log ${this.dir} is offline: ${e.message}`);
        throw new FlotillaError('STORAGE_ERROR', `partition log ${this.dir}: ${e.message}`, { dir: this.dir }, { cause: e });
      }
    });
    this.queue = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  private refreshTimestampPrefix(): void {
    let max = -1;
    this.prefixMaxTimestamp = this.segments.map((s) => (max = Math.max(max, s.maxTimestampMs)));
  }

  private updateActiveTimestampPrefix(): void {
    const n = this.segments.length;
    this.prefixMaxTimestamp[n - 1] = Math.max(this.prefixMaxTimestamp[n - 2] ?? -1, this.active.maxTimestampMs);
  }
}

// ---- opening ----

interface OpenedSegments {
  readonly list: LogSegment[];
  /** The first batch of each epoch found by a full validation (for the epoch cache). */
  readonly recoveredEpochStarts: EpochEntry[];
  /**
   * True after a clean close when recovery changed no file: everything is as close() left
   * it, fsynced, so the open needs no fsync of its own.
   */
  readonly durableAsFound: boolean;
}

async function openSegments(dir: string, config: LogConfig, logger: Logger): Promise<OpenedSegments> {
  const names = await fs.readdir(dir);
  const bases = names
    .map(parseSegmentFileName)
    .filter((b): b is number => b !== undefined)
    .sort((a, b) => a - b);
  const known = new Set(bases.map(segmentFileStem));
  for (const name of names) {
    const m = /^(\d{20})\.(index|timeindex)$/.exec(name);
    // Leftovers of an interrupted rename or segment deletion.
    if (name.endsWith('.tmp') || (m !== null && !known.has(m[1]!))) await unlinkIfPresent(path.join(dir, name));
  }
  const markerPath = path.join(dir, CLEAN_SHUTDOWN_FILE);
  const clean = names.includes(CLEAN_SHUTDOWN_FILE);
  if (clean) {
    // Gone (durably) before anything is written: a crash from here on is an unclean shutdown.
    await unlinkIfPresent(markerPath);
    await fsyncDir(dir);
  }
  if (bases.length === 0) {
    const segment = await LogSegment.create(dir, 0, config.indexIntervalBytes);
    await fsyncDir(dir);
    return { list: [segment], recoveredEpochStarts: [], durableAsFound: false };
  }
  const list: LogSegment[] = [];
  const recoveredEpochStarts: EpochEntry[] = [];
  let durableAsFound = clean;
  const onBatch = (h: RecordBatchHeader): void => {
    const last = recoveredEpochStarts[recoveredEpochStarts.length - 1];
    if (last === undefined || h.partitionLeaderEpoch > last.epoch) recoveredEpochStarts.push({ epoch: h.partitionLeaderEpoch, startOffset: h.baseOffset });
  };
  try {
    for (let i = 0; i < bases.length; i++) {
      const base = bases[i]!;
      const prev = list[list.length - 1];
      if (prev !== undefined && prev.nextOffset !== base) {
        throw new FlotillaError(
          'STORAGE_ERROR',
          `partition log ${dir}: segment ${segmentFileStem(base)} does not continue the previous one, which ends at offset ${prev.nextOffset}; the log has a gap (files lost or copied in?) and needs an operator`,
          { dir, segment: base, expectedOffset: prev.nextOffset },
        );
      }
      const isLast = i === bases.length - 1;
      const mode = isLast && !clean ? 'full' : 'tail';
      const { segment, recovery } = await LogSegment.open(dir, base, config.indexIntervalBytes, mode, mode === 'full' ? onBatch : undefined);
      list.push(segment);
      const fields = { dir, segment: segmentFileStem(base), validated: recovery.validated, nextOffset: segment.nextOffset };
      if (recovery.truncatedBytes > 0 || recovery.indexesRewritten) durableAsFound = false;
      if (recovery.truncatedBytes > 0) {
        logger.warn(
          { ...fields, truncatedBytes: recovery.truncatedBytes, position: recovery.truncatedAtPosition, reason: recovery.reason },
          `recovery cut ${recovery.truncatedBytes} bytes from segment ${segmentFileStem(base)} at position ${recovery.truncatedAtPosition}: ${recovery.reason}; the log now ends at offset ${segment.nextOffset}`,
        );
        if (!isLast) {
          // A closed segment is fsynced before the next one starts, so this is disk damage.
          // The log must stay contiguous: everything after the cut goes, newest first.
          const later = bases.slice(i + 1).reverse();
          for (const b of later) {
            const p = LogSegment.filePaths(dir, b);
            await unlinkIfPresent(p.log);
            await unlinkIfPresent(p.index);
            await unlinkIfPresent(p.timeIndex);
          }
          await fsyncDir(dir);
          logger.error({ ...fields, deletedSegments: later.map(segmentFileStem) }, `deleted ${later.length} later segments after the damaged one`);
          break;
        }
      } else if (recovery.indexesRewritten) {
        logger.info(fields, `rebuilt the indexes of segment ${segmentFileStem(base)}`);
      }
    }
  } catch (e) {
    for (const s of list) await s.close().catch(() => undefined);
    throw e;
  }
  return { list, recoveredEpochStarts, durableAsFound };
}

async function openEpochCache(dir: string, segments: LogSegment[], recovered: EpochEntry[], logger: Logger): Promise<LeaderEpochCache> {
  const { cache, status } = await LeaderEpochCache.open(dir);
  const start = segments[0]!.baseOffset;
  const end = segments[segments.length - 1]!.nextOffset;
  if (status === 'corrupt' || (end > start && cache.latestEpoch < 0)) {
    // Rebuild from the batch headers of the whole log (rare: the file is written before the
    // first batch of every epoch, so it is missing or empty only if someone removed it).
    const entries: EpochEntry[] = [];
    for (const s of segments) {
      await s.visitAllHeaders((h) => {
        const last = entries[entries.length - 1];
        if (last === undefined || h.partitionLeaderEpoch > last.epoch) entries.push({ epoch: h.partitionLeaderEpoch, startOffset: h.baseOffset });
      });
    }
    logger.warn({ dir, status, epochs: entries.length }, `${LEADER_EPOCH_CHECKPOINT_FILE} was ${status === 'loaded' ? 'empty' : status}: rebuilt it from the log`);
    await cache.replaceAll(entries);
    return cache;
  }
  await cache.truncateFromEnd(end);
  // Epochs that began in the recovered active segment but never reached the checkpoint
  // cannot happen with the write order of append; re-adding them costs nothing and keeps the
  // cache equal to the log whatever the order was.
  for (const e of recovered) {
    if (e.startOffset < end && e.epoch > cache.latestEpoch) await cache.assign(e.epoch, e.startOffset);
  }
  await cache.truncateFromStart(start);
  return cache;
}
