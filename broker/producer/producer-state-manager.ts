import { strict as assert } from 'node:assert';
import { promises as fs } from 'node:fs';
import { FlotillaError, isFlotillaError } from '../../shared/errors/error-codes';
import { silentLogger } from '../../shared/log';
import type { Logger } from '../../shared/log';
import { readBatchHeader } from '../../shared/records/record-batch';
import type { RecordBatchHeader } from '../../shared/records/record-batch';
import { ProducerStateTable } from './producer-state';
import type { CheckResult, ProducerStateLimits } from './producer-state';
import {
  deleteSnapshotFile,
  deleteSnapshotTempFiles,
  fsyncDir,
  listSnapshots,
  readSnapshotFile,
  writeSnapshotFile,
} from './producer-snapshot';
import type { ProducerSnapshot } from './producer-snapshot';

// The idempotent-producer state of one partition replica, kept across restarts and leader
// changes (Kafka's ProducerStateManager with its snapshot files and UnifiedLog's
// rebuildProducerState). It is the replica manager's ProducerGuard for that partition:
//
//   leader:   check(headers) -> 'append' | 'duplicate'   (in the serialized append section)
//             log.append(...) -> onAppended(headersWithFinalOffsets)
//   follower: log.append(fetched) -> onAppended(headers)
//   both:     log.truncateTo(x) / truncateFullyAndStartAt(x) -> await onTruncated(newLogEnd)
//
// The state is a function of the log (producer-state.ts): `onAppended` applies every batch
// the log took, in log order, on the leader and on followers alike, so a follower that becomes
// leader already knows every producer. To survive a restart it is snapshotted to
// `<dir>/<endOffset>.snapshot` (producer-snapshot.ts) every `snapshotIntervalBatches` batches
// or `snapshotIntervalBytes` bytes and at close; `open` loads the newest snapshot at or below
// the log end that the log confirms (it still holds the snapshot's last batch, same CRC) and
// replays the batch headers after it. A truncation deletes the snapshots above the new end
// and rebuilds the same way. A snapshot that is corrupt or does not match the log is deleted
// and an older one (or the log from its start) is used instead: never trusted.
//
// Contract with the caller (asserted): check/onAppended are not called while onTruncated or
// close is in progress, and onAppended gets every batch the log appends, in order. Snapshot
// writes run in the background; a failed write is logged and costs only a longer replay on
// the next open (the log is the truth).

/** The seam the replica manager's produce path calls (declared by broker/replica/). */
export interface ProducerGuard {
  /**
   * Leader only, inside the partition's serialized append section, before the log append of
   * one request's batches for this partition: 'append', or the original offsets of an
   * identical batch already in the log (an idempotent retry, answered without appending).
   * Throws FlotillaError OUT_OF_ORDER_SEQUENCE / INVALID_PRODUCER_EPOCH / UNKNOWN_PRODUCER_ID.
   * Does not change state.
   */
  check(headers: readonly RecordBatchHeader[]): { kind: 'append' } | { kind: 'duplicate'; baseOffset: number; lastOffset: number };
  /** Leader and follower, after batches were appended, with their final base offsets. */
  onAppended(headers: readonly RecordBatchHeader[]): void;
  /** After the log was truncated to endOffset (exclusive). */
  onTruncated(endOffset: number): Promise<void>;
  close(): Promise<void>;
}

/** What the rebuild needs of the partition log (broker/log PartitionLog has this shape). */
export interface ProducerLogReader {
  readonly logStartOffset: number;
  readonly logEndOffset: number;
  /** Whole, CRC-checked batches from the one holding `fromOffset`; empty at the end. */
  read(fromOffset: number, maxBytes: number, isolation: 'logEnd'): Promise<{ readonly records: Buffer; readonly nextOffset: number }>;
}

export interface ProducerStateManagerOptions {
  /** Where the snapshot files go: the partition's log directory (created when missing). */
  readonly dir: string;
  readonly log: ProducerLogReader;
  readonly logger?: Logger;
  /** Wall clock (ms) for producer expiry. Default Date.now. */
  readonly nowMs?: () => number;
  readonly limits?: Partial<ProducerStateLimits>;
  /** A snapshot after this many batches appended since the last one. Default 4096. */
  readonly snapshotIntervalBatches?: number;
  /** ... or after this many bytes. Default 64 MiB: bounds the replay on open. */
  readonly snapshotIntervalBytes?: number;
  /** Snapshot files kept (newest); older ones are deleted. Default 2 (one to fall back on). */
  readonly snapshotsRetained?: number;
  /** How often expired producers are looked for, on append. Default 10 min (Kafka's). */
  readonly expirationCheckIntervalMs?: number;
  /** maxBytes of each log read while replaying. Default 1 MiB. */
  readonly rebuildReadBytes?: number;
}

interface ManagerSettings {
  readonly snapshotIntervalBatches: number;
  readonly snapshotIntervalBytes: number;
  readonly snapshotsRetained: number;
  readonly expirationCheckIntervalMs: number;
  readonly rebuildReadBytes: number;
}

export const PRODUCER_STATE_DEFAULTS: ManagerSettings = {
  snapshotIntervalBatches: 4096,
  snapshotIntervalBytes: 64 * 1024 * 1024,
  snapshotsRetained: 2,
  expirationCheckIntervalMs: 10 * 60 * 1000,
  rebuildReadBytes: 1024 * 1024,
};

/** What a rebuild did: for logs and tests. */
export interface RebuildInfo {
  /** End offset of the snapshot used; undefined when replayed from the log start. */
  readonly snapshotOffset: number | undefined;
  /** Snapshot files ignored (corrupt, or not matching the log) and deleted. */
  readonly snapshotsRejected: number;
  readonly batchesReplayed: number;
}

export class ProducerStateManager implements ProducerGuard {
  private batchesSinceSnapshot = 0;
  private bytesSinceSnapshot = 0;
  /** Background snapshot writes, deletions and rebuilds, one at a time. */
  private io: Promise<void> = Promise.resolve();
  private snapshotPending = false;
  private busy: 'truncating' | 'closing' | 'closed' | undefined;
  private lastExpiryCheckMs: number;

  private constructor(
    private table: ProducerStateTable,
    private readonly dir: string,
    private readonly log: ProducerLogReader,
    private readonly logger: Logger,
    private readonly nowMs: () => number,
    private readonly limits: Partial<ProducerStateLimits>,
    private readonly settings: ManagerSettings,
    /** What the last open/truncation rebuild did. */
    public lastRebuild: RebuildInfo,
  ) {
    this.lastExpiryCheckMs = nowMs();
  }

  /** Loads the state for the log as it is now: newest trusted snapshot + replay (see header). */
  static async open(o: ProducerStateManagerOptions): Promise<ProducerStateManager> {
    const settings: ManagerSettings = {
      snapshotIntervalBatches: o.snapshotIntervalBatches ?? PRODUCER_STATE_DEFAULTS.snapshotIntervalBatches,
      snapshotIntervalBytes: o.snapshotIntervalBytes ?? PRODUCER_STATE_DEFAULTS.snapshotIntervalBytes,
      snapshotsRetained: o.snapshotsRetained ?? PRODUCER_STATE_DEFAULTS.snapshotsRetained,
      expirationCheckIntervalMs: o.expirationCheckIntervalMs ?? PRODUCER_STATE_DEFAULTS.expirationCheckIntervalMs,
      rebuildReadBytes: o.rebuildReadBytes ?? PRODUCER_STATE_DEFAULTS.rebuildReadBytes,
    };
    for (const [k, v] of Object.entries(settings)) assert(Number.isSafeInteger(v) && v >= 1, `${k} ${v}`);
    const logger = o.logger ?? silentLogger();
    const nowMs = o.nowMs ?? Date.now;
    const limits = o.limits ?? {};
    await fs.mkdir(o.dir, { recursive: true });
    await deleteSnapshotTempFiles(o.dir);
    const { table, info } = await rebuild(o.dir, o.log, o.log.logEndOffset, limits, settings.rebuildReadBytes, logger);
    const m = new ProducerStateManager(table, o.dir, o.log, logger, nowMs, limits, settings, info);
    m.expire();
    m.batchesSinceSnapshot = info.batchesReplayed;
    logger.info(
      { dir: o.dir, endOffset: table.endOffset, producers: table.size, ...info },
      `producer state loaded: ${table.size} producers at offset ${table.endOffset} (snapshot ${info.snapshotOffset ?? 'none'}, ${info.batchesReplayed} batches replayed)`,
    );
    return m;
  }

  /** The state itself, read-only use: tests, metrics, DescribeProducers later. */
  get state(): ProducerStateTable {
    return this.table;
  }

  check(headers: readonly RecordBatchHeader[]): CheckResult {
    assert(this.busy === undefined, `producer state check while ${this.busy}`);
    return this.table.check(headers);
  }

  onAppended(headers: readonly RecordBatchHeader[]): void {
    assert(this.busy === undefined, `producer state append while ${this.busy}`);
    const evicted = this.table.apply(headers);
    if (evicted.length > 0) {
      // debug, not info: at the bound every new producer evicts one, which would flood the log.
      this.logger.debug({ dir: this.dir, evicted: evicted.length, producerIdsMax: this.table.limits.producerIdsMax }, `evicted ${evicted.length} least recently written producers: the partition holds its maximum`);
    }
    this.batchesSinceSnapshot += headers.length;
    for (const h of headers) this.bytesSinceSnapshot += h.sizeBytes;
    if (this.nowMs() - this.lastExpiryCheckMs >= this.settings.expirationCheckIntervalMs) this.expire();
    if (this.batchesSinceSnapshot >= this.settings.snapshotIntervalBatches || this.bytesSinceSnapshot >= this.settings.snapshotIntervalBytes) {
      this.snapshotInBackground();
    }
  }

  async onTruncated(endOffset: number): Promise<void> {
    assert(this.busy === undefined, `producer state truncation while ${this.busy}`);
    assert(Number.isSafeInteger(endOffset) && endOffset >= 0, `truncated to ${endOffset}`);
    // The log holds nothing and starts elsewhere than the state ends: it was emptied and
    // restarted (Kafka's truncateFullyAndStartAt, or a truncateTo below the log start).
    const emptied = this.log.logStartOffset >= endOffset && endOffset !== this.table.endOffset;
    if (!emptied && endOffset >= this.table.endOffset) return; // nothing the state knows was removed
    this.busy = 'truncating';
    try {
      await this.serially(async () => {
        if (emptied) {
          // What came before may not be this log's history any more (a follower restarted at
          // its leader's log start): no snapshot of it may be used, no producer kept.
          for (const o of (await listSnapshots(this.dir)).reverse()) await deleteSnapshotFile(this.dir, o);
          await fsyncDir(this.dir);
          this.table = new ProducerStateTable(endOffset, this.limits);
          this.lastRebuild = { snapshotOffset: undefined, snapshotsRejected: 0, batchesReplayed: 0 };
        } else {
          const { table, info } = await rebuild(this.dir, this.log, endOffset, this.limits, this.settings.rebuildReadBytes, this.logger);
          this.table = table;
          this.lastRebuild = info;
        }
        this.batchesSinceSnapshot = this.lastRebuild.batchesReplayed;
        this.bytesSinceSnapshot = 0;
        this.logger.info({ dir: this.dir, endOffset, producers: this.table.size, ...this.lastRebuild }, `producer state rebuilt after truncation to ${endOffset}`);
      });
    } finally {
      this.busy = undefined;
    }
  }

  /** Writes a snapshot of the current state now (and waits for it). */
  async takeSnapshot(): Promise<void> {
    assert(this.busy === undefined || this.busy === 'closing', `snapshot while ${this.busy}`);
    const snap = this.capture();
    await this.serially(() => this.writeSnapshot(snap));
  }

  /** Resolves when no background snapshot write is pending (tests; what a crash would cut short). */
  async whenIdle(): Promise<void> {
    await this.io;
  }

  /** Waits for background writes, then snapshots what was appended since the last one. */
  async close(): Promise<void> {
    if (this.busy === 'closed' || this.busy === 'closing') return;
    assert(this.busy === undefined, `close while ${this.busy}`);
    this.busy = 'closing';
    try {
      if (this.batchesSinceSnapshot > 0) {
        await this.takeSnapshot().catch((e: unknown) =>
          this.logger.warn({ dir: this.dir, err: e }, 'producer state snapshot at close failed: the next open replays more of the log'),
        );
      } else {
        await this.io;
      }
    } finally {
      this.busy = 'closed';
    }
  }

  // ---- internals ----

  private expire(): void {
    const now = this.nowMs();
    this.lastExpiryCheckMs = now;
    const removed = this.table.removeExpired(now);
    if (removed.length > 0) this.logger.info({ dir: this.dir, expired: removed.length }, `forgot ${removed.length} producers idle for producer.id.expiration.ms`);
  }

  private capture(): ProducerSnapshot {
    this.batchesSinceSnapshot = 0;
    this.bytesSinceSnapshot = 0;
    return { endOffset: this.table.endOffset, lastBatch: this.table.lastBatch, entries: this.table.entries() };
  }

  /** At most one background snapshot waits at a time; the next append after it retries. */
  private snapshotInBackground(): void {
    if (this.snapshotPending) return;
    this.snapshotPending = true;
    const snap = this.capture();
    void this.serially(() => this.writeSnapshot(snap))
      .catch((e: unknown) => this.logger.warn({ dir: this.dir, err: e, endOffset: snap.endOffset }, 'producer state snapshot failed: the next open replays more of the log'))
      .finally(() => {
        this.snapshotPending = false;
      });
  }

  private async writeSnapshot(snap: ProducerSnapshot): Promise<void> {
    await writeSnapshotFile(this.dir, snap);
    const all = await listSnapshots(this.dir);
    const old = all.slice(0, Math.max(0, all.length - this.settings.snapshotsRetained));
    for (const o of old) await deleteSnapshotFile(this.dir, o);
    if (old.length > 0) await fsyncDir(this.dir);
  }

  private serially<T>(op: () => Promise<T>): Promise<T> {
    const result = this.io.then(op);
    this.io = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}

/**
 * The state of the log below `target`: the newest snapshot at or below it that the log
 * confirms, then the batch headers after it. Deletes snapshots above `target` and those
 * found corrupt or not matching the log.
 */
async function rebuild(
  dir: string,
  log: ProducerLogReader,
  target: number,
  limits: Partial<ProducerStateLimits>,
  readBytes: number,
  logger: Logger,
): Promise<{ table: ProducerStateTable; info: RebuildInfo }> {
  // The log may end below `target` only if the caller broke the contract; never read past it.
  target = Math.min(target, log.logEndOffset);
  const offsets = await listSnapshots(dir);
  let deleted = 0;
  // Newest first: a crash in between leaves only snapshots below the ones deleted.
  for (const o of [...offsets].reverse()) {
    if (o > target) {
      await deleteSnapshotFile(dir, o);
      deleted++;
    }
  }
  let table: ProducerStateTable | undefined;
  let rejected = 0;
  for (const o of offsets.filter((x) => x <= target).reverse()) {
    const s = await readSnapshotFile(dir, o);
    const why = typeof s === 'string' ? s : await mismatchWithLog(s, log);
    if (why !== undefined || typeof s === 'string') {
      logger.warn({ dir, snapshotOffset: o, reason: why }, `ignoring producer state snapshot at ${o}: ${why}`);
      await deleteSnapshotFile(dir, o);
      deleted++;
      rejected++;
      continue;
    }
    table = ProducerStateTable.restore(s.endOffset, s.entries, limits, s.lastBatch);
    break;
  }
  if (deleted > 0) await fsyncDir(dir);
  const snapshotOffset = table?.endOffset;
  table ??= new ProducerStateTable(log.logStartOffset, limits);
  if (table.endOffset < log.logStartOffset) {
    // Retention deleted segments after the snapshot: batches in between are gone for good.
    // The snapshot's entries are kept (as Kafka keeps producers across log-start moves);
    // a producer that wrote only in the gap looks one batch behind and gets
    // OUT_OF_ORDER_SEQUENCE. Snapshots every snapshotIntervalBatches make this unlikely.
    logger.warn({ dir, snapshotOffset, logStartOffset: log.logStartOffset }, 'producer state snapshot is below the log start offset; replaying from the log start');
  }
  const batchesReplayed = await replay(table, log, Math.max(table.endOffset, log.logStartOffset), target, readBytes, dir);
  return { table, info: { snapshotOffset, snapshotsRejected: rejected, batchesReplayed } };
}

/** Why the log does not confirm the snapshot (its last batch is not there), or undefined. */
async function mismatchWithLog(s: ProducerSnapshot, log: ProducerLogReader): Promise<string | undefined> {
  if (s.lastBatch === null) {
    // Only an empty state has no last batch: it can describe no log that holds data below it.
    return s.endOffset <= log.logStartOffset ? undefined : `it records no batch, but the log holds offsets ${log.logStartOffset}..${s.endOffset - 1}`;
  }
  if (s.lastBatch.lastOffset < log.logStartOffset) return undefined; // retention removed it: nothing left to compare
  if (s.lastBatch.lastOffset >= log.logEndOffset) return `its last batch ends at ${s.lastBatch.lastOffset}, past the log end ${log.logEndOffset}`;
  try {
    const r = await log.read(s.lastBatch.lastOffset, 1, 'logEnd');
    if (r.records.length === 0) return `the log returned nothing at offset ${s.lastBatch.lastOffset}`;
    const h = readBatchHeader(r.records, 0);
    if (h.lastOffset !== s.lastBatch.lastOffset || h.crc !== s.lastBatch.crc) {
      return `the log's batch holding offset ${s.lastBatch.lastOffset} ends at ${h.lastOffset} with CRC ${h.crc}, the snapshot says ${s.lastBatch.lastOffset} with CRC ${s.lastBatch.crc} (another history)`;
    }
    return undefined;
  } catch (e) {
    return `the log could not confirm it: ${(e as Error).message}`;
  }
}

/** Applies the batches in [from, target) to `table`; returns how many. */
async function replay(table: ProducerStateTable, log: ProducerLogReader, from: number, target: number, readBytes: number, dir: string): Promise<number> {
  let next = from;
  let count = 0;
  while (next < target) {
    let r: { readonly records: Buffer; readonly nextOffset: number };
    try {
      r = await log.read(next, readBytes, 'logEnd');
    } catch (e) {
      if (isFlotillaError(e, 'STORAGE_ERROR')) throw e;
      throw new FlotillaError(
        'STORAGE_ERROR',
        `producer state of ${dir}: cannot replay the log at offset ${next}: ${(e as Error).message}`,
        { dir, offset: next },
        { cause: e },
      );
    }
    if (r.records.length === 0) break; // the log ends before `target`
    assert(r.nextOffset > next, `log read at ${next} did not advance (next ${r.nextOffset})`);
    const headers: RecordBatchHeader[] = [];
    for (let pos = 0; pos < r.records.length; ) {
      const h = readBatchHeader(r.records, pos);
      pos += h.sizeBytes;
      if (h.baseOffset >= table.endOffset && h.baseOffset < target) headers.push(h);
    }
    table.apply(headers);
    count += headers.length;
    next = r.nextOffset;
  }
  return count;
}
