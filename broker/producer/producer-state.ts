import { strict as assert } from 'node:assert';
import { FlotillaError } from '../../shared/errors/error-codes';
import type { RecordBatchHeader } from '../../shared/records/record-batch';

// The idempotent-producer state of one partition replica, as a pure state machine (Kafka's
// ProducerStateManager map + ProducerStateEntry + ProducerAppendInfo). No I/O, no clock: time
// comes in as arguments, the log comes in as batch headers.
//
// Per producer id it keeps the producer epoch and the last BATCHES_RETAINED_PER_PRODUCER
// batches the log holds for that epoch (first/last sequence, first/last offset). The leader
// asks `check` before appending one request's batches; every replica calls `apply` after
// appending (leader and follower alike, and the rebuild from the log), so the state is a
// function of the log: the batches in log order, plus expiry and the size bound.
//
// The rules of `check` (Kafka's ProducerAppendInfo.checkProducerEpoch/checkSequence, with
// the differences noted):
// - producerId -1: not idempotent, always appended, no state.
// - Duplicate: same producer, same epoch as the entry, and a batch in the entry's window with
//   exactly the same first and last sequence -> the original offsets, nothing is appended
//   (Kafka's ProducerStateEntry.findDuplicateBatch).
// - Epoch older than the entry's -> INVALID_PRODUCER_EPOCH (a fenced zombie).
// - Epoch newer than the entry's -> the sequence must restart at 0, else OUT_OF_ORDER_SEQUENCE.
// - Same epoch -> the batch must start right after the entry's last sequence (wrapping from
//   int32 max to 0), else OUT_OF_ORDER_SEQUENCE. That covers a gap (a lost batch) and a
//   retry older than the window (the 6th-oldest batch): Kafka answers the latter with
//   OUT_OF_ORDER_SEQUENCE too. A client that keeps at most 5 requests in flight per
//   connection (max.in.flight.requests.per.connection) never retries a batch older than that.
// - Unknown producer (no entry): the batch must start at sequence 0, else UNKNOWN_PRODUCER_ID.
//   This is the pre-KIP-360 rule, kept on purpose: modern Kafka accepts any sequence from an
//   unknown producer (so a producer whose state expired or was truncated away keeps going),
//   which also silently accepts a sequence whose first batches were lost (acks=1 and a leader
//   that died before replicating). Flotilla prefers to say so; the client answers
//   UNKNOWN_PRODUCER_ID by getting a fresh producer id (or epoch) and restarting at 0, which
//   is safe because every batch before it was acknowledged or failed.
// - Within one request, several batches of one producer must follow each other (each is
//   checked against the state the earlier ones would leave). A request whose batches are all
//   duplicates, of one original append (contiguous offsets in request order), is answered
//   with the original offsets; a request mixing duplicates with anything else is refused
//   with OUT_OF_ORDER_SEQUENCE (Kafka avoids the question: one batch per partition per
//   request). Nothing of a refused request is appended.
// - An idempotent batch (producerId >= 0) without an epoch or a base sequence (-1) is
//   INVALID_RECORD.
//
// `apply` does not validate (Kafka's REPLICATION origin): the log already holds the batches,
// and a replica's state must follow its log. A batch whose epoch differs from the entry's,
// older or newer, restarts the entry at that epoch (as Kafka's addBatch does).
//
// Limits: at most BATCHES_RETAINED_PER_PRODUCER batches per producer; at most
// `producerIdsMax` producers: appending for a new producer when full evicts the least
// recently written one (its next batch, unless it starts a sequence, is UNKNOWN_PRODUCER_ID);
// producers whose last batch is older than `producerIdExpirationMs` are removed by
// `removeExpired` (Kafka's producer.id.expiration.ms, default 1 day; the age is measured
// against the batch's maxTimestamp, as Kafka does, so that the rebuilt state expires alike).

/** Batches remembered per producer: Kafka's NUM_BATCHES_TO_RETAIN, = the client's max in flight. */
export const BATCHES_RETAINED_PER_PRODUCER = 5;
export const INT32_MAX = 0x7fffffff;
/** Producer epochs are int16 on the wire. */
export const PRODUCER_EPOCH_MAX = 0x7fff;

export interface ProducerStateLimits {
  /**
   * Producers remembered per partition; the least recently written is evicted beyond it.
   * Default 4096: about 4096 x ~500 bytes of heap (entry, 5 batch records, map slot) = ~2 MiB
   * per partition at worst.
   */
  readonly producerIdsMax: number;
  /** A producer with no batch for this long is forgotten (Kafka producer.id.expiration.ms). */
  readonly producerIdExpirationMs: number;
}

export const DEFAULT_PRODUCER_STATE_LIMITS: ProducerStateLimits = {
  producerIdsMax: 4096,
  producerIdExpirationMs: 24 * 60 * 60 * 1000,
};

/** One appended batch of a producer. */
export interface ProducerBatchEntry {
  readonly firstSeq: number;
  readonly lastSeq: number;
  readonly firstOffset: number;
  readonly lastOffset: number;
}

/** What a partition knows of one producer. */
export interface ProducerEntry {
  readonly producerId: number;
  readonly epoch: number;
  /** maxTimestamp of its last batch: the age used for expiry. */
  readonly lastTimestampMs: number;
  /** Oldest first; 1..BATCHES_RETAINED_PER_PRODUCER entries, all of `epoch`. */
  readonly batches: readonly ProducerBatchEntry[];
}

export type CheckResult = { readonly kind: 'append' } | { readonly kind: 'duplicate'; readonly baseOffset: number; readonly lastOffset: number };

/** The last batch the state has seen: lets a snapshot be checked against the log it describes. */
export interface LastBatch {
  readonly lastOffset: number;
  readonly crc: number;
}

/** The last sequence of a batch: baseSequence + lastOffsetDelta, wrapping past int32 max to 0. */
export function lastSequenceOf(baseSequence: number, lastOffsetDelta: number): number {
  return baseSequence > INT32_MAX - lastOffsetDelta ? lastOffsetDelta - (INT32_MAX - baseSequence) - 1 : baseSequence + lastOffsetDelta;
}

/** True when `nextSeq` is the sequence right after `lastSeq` (int32 max is followed by 0). */
export function isNextSequence(lastSeq: number, nextSeq: number): boolean {
  return nextSeq === lastSeq + 1 || (nextSeq === 0 && lastSeq === INT32_MAX);
}

export function checkProducerStateLimits(l: ProducerStateLimits): ProducerStateLimits {
  assert(Number.isSafeInteger(l.producerIdsMax) && l.producerIdsMax >= 1, `producerIdsMax ${l.producerIdsMax}`);
  assert(Number.isSafeInteger(l.producerIdExpirationMs) && l.producerIdExpirationMs >= 1, `producerIdExpirationMs ${l.producerIdExpirationMs}`);
  return l;
}

interface MutableEntry {
  readonly producerId: number;
  epoch: number;
  lastTimestampMs: number;
  batches: ProducerBatchEntry[];
}

/** Where a producer stands for `check`: its epoch and last sequence, or unknown. */
interface SequenceView {
  readonly epoch: number;
  readonly lastSeq: number;
}

function isIdempotent(h: RecordBatchHeader): boolean {
  return h.producerId >= 0;
}

export class ProducerStateTable {
  /** Map order is write order: the first entry is the least recently written (eviction). */
  private readonly producers = new Map<number, MutableEntry>();
  private end: number;
  private last: LastBatch | null;
  readonly limits: ProducerStateLimits;

  /** An empty state describing a log that ends at `endOffset`. */
  constructor(endOffset = 0, limits: Partial<ProducerStateLimits> = {}, lastBatch: LastBatch | null = null) {
    assert(Number.isSafeInteger(endOffset) && endOffset >= 0, `endOffset ${endOffset}`);
    this.end = endOffset;
    this.last = lastBatch;
    this.limits = checkProducerStateLimits({ ...DEFAULT_PRODUCER_STATE_LIMITS, ...limits });
  }

  /** A state from a snapshot: `entries` in write order (least recently written first). */
  static restore(
    endOffset: number,
    entries: readonly ProducerEntry[],
    limits: Partial<ProducerStateLimits> = {},
    lastBatch: LastBatch | null = null,
  ): ProducerStateTable {
    const t = new ProducerStateTable(endOffset, limits, lastBatch);
    for (const e of entries) {
      assert(!t.producers.has(e.producerId), `producer ${e.producerId} twice in a snapshot`);
      assert(e.batches.length >= 1 && e.batches.length <= BATCHES_RETAINED_PER_PRODUCER, `producer ${e.producerId}: ${e.batches.length} batches`);
      t.producers.set(e.producerId, { producerId: e.producerId, epoch: e.epoch, lastTimestampMs: e.lastTimestampMs, batches: e.batches.map((b) => ({ ...b })) });
    }
    t.evictBeyondLimit();
    return t;
  }

  /** The log end offset this state describes (exclusive): every batch below it was applied. */
  get endOffset(): number {
    return this.end;
  }

  get lastBatch(): LastBatch | null {
    return this.last;
  }

  get size(): number {
    return this.producers.size;
  }

  get(producerId: number): ProducerEntry | undefined {
    const e = this.producers.get(producerId);
    return e === undefined ? undefined : copy(e);
  }

  /** Every producer, least recently written first (the order a snapshot keeps). */
  entries(): ProducerEntry[] {
    return [...this.producers.values()].map(copy);
  }

  /**
   * The leader's verdict on one request's batches for this partition, before appending them:
   * 'append', or the original offsets when every batch is a retry of batches already in the
   * log. Throws OUT_OF_ORDER_SEQUENCE, INVALID_PRODUCER_EPOCH, UNKNOWN_PRODUCER_ID or
   * INVALID_RECORD (rules in the header). Changes nothing.
   */
  check(headers: readonly RecordBatchHeader[]): CheckResult {
    // What the batches earlier in this request would leave, per producer.
    const pending = new Map<number, SequenceView>();
    const duplicates: ProducerBatchEntry[] = [];
    let appends = 0;
    for (let i = 0; i < headers.length; i++) {
      const h = headers[i]!;
      if (h.producerId === -1) {
        appends++;
        continue;
      }
      checkIdempotentFields(h, i);
      const lastSeq = lastSequenceOf(h.baseSequence, h.lastOffsetDelta);
      const entry = this.producers.get(h.producerId);
      if (entry !== undefined && entry.epoch === h.producerEpoch) {
        const dup = entry.batches.find((b) => b.firstSeq === h.baseSequence && b.lastSeq === lastSeq);
        if (dup !== undefined) {
          duplicates.push(dup);
          pending.set(h.producerId, { epoch: h.producerEpoch, lastSeq });
          continue;
        }
      }
      const before = pending.get(h.producerId) ?? (entry === undefined ? undefined : { epoch: entry.epoch, lastSeq: entry.batches[entry.batches.length - 1]!.lastSeq });
      checkSequence(h, i, before, pending.has(h.producerId));
      pending.set(h.producerId, { epoch: h.producerEpoch, lastSeq });
      appends++;
    }
    if (duplicates.length === 0) return { kind: 'append' };
    if (appends > 0) {
      throw new FlotillaError(
        'OUT_OF_ORDER_SEQUENCE',
        `the request holds ${duplicates.length} batch(es) already in the log and ${appends} new one(s): a retry must resend exactly the batches it sent`,
        { duplicates: duplicates.length, newBatches: appends },
      );
    }
    for (let i = 1; i < duplicates.length; i++) {
      if (duplicates[i]!.firstOffset !== duplicates[i - 1]!.lastOffset + 1) {
        throw new FlotillaError(
          'OUT_OF_ORDER_SEQUENCE',
          `the request retries batches that were not appended together in this order (offsets ${duplicates[i - 1]!.lastOffset} then ${duplicates[i]!.firstOffset})`,
          { previousLastOffset: duplicates[i - 1]!.lastOffset, firstOffset: duplicates[i]!.firstOffset },
        );
      }
    }
    return { kind: 'duplicate', baseOffset: duplicates[0]!.firstOffset, lastOffset: duplicates[duplicates.length - 1]!.lastOffset };
  }

  /**
   * Records batches the log now holds, with their final offsets, in log order (leader after
   * its append, follower after replicating, rebuild while scanning). Never throws on the
   * producer fields: the state follows the log. Returns the producer ids evicted by the
   * size bound.
   */
  apply(headers: readonly RecordBatchHeader[]): number[] {
    const evicted: number[] = [];
    for (const h of headers) {
      assert(h.baseOffset >= this.end, `batch at offset ${h.baseOffset} applied to producer state that already ends at ${this.end}`);
      this.end = h.lastOffset + 1;
      this.last = { lastOffset: h.lastOffset, crc: h.crc };
      if (!isIdempotent(h) || h.producerEpoch < 0 || h.baseSequence < 0) continue;
      const batch: ProducerBatchEntry = {
        firstSeq: h.baseSequence,
        lastSeq: lastSequenceOf(h.baseSequence, h.lastOffsetDelta),
        firstOffset: h.baseOffset,
        lastOffset: h.lastOffset,
      };
      let entry = this.producers.get(h.producerId);
      if (entry !== undefined) this.producers.delete(h.producerId); // re-inserted last: most recently written
      if (entry === undefined || entry.epoch !== h.producerEpoch) {
        entry = { producerId: h.producerId, epoch: h.producerEpoch, lastTimestampMs: h.maxTimestampMs, batches: [] };
      }
      entry.batches.push(batch);
      if (entry.batches.length > BATCHES_RETAINED_PER_PRODUCER) entry.batches.shift();
      entry.lastTimestampMs = h.maxTimestampMs;
      this.producers.set(h.producerId, entry);
      evicted.push(...this.evictBeyondLimit());
    }
    return evicted;
  }

  /** Forgets producers whose last batch is producerIdExpirationMs or more older than `nowMs`. */
  removeExpired(nowMs: number): number[] {
    const removed: number[] = [];
    for (const [id, e] of this.producers) {
      if (nowMs - e.lastTimestampMs >= this.limits.producerIdExpirationMs) removed.push(id);
    }
    for (const id of removed) this.producers.delete(id);
    return removed;
  }

  private evictBeyondLimit(): number[] {
    const out: number[] = [];
    while (this.producers.size > this.limits.producerIdsMax) {
      const oldest = this.producers.keys().next().value as number;
      this.producers.delete(oldest);
      out.push(oldest);
    }
    return out;
  }
}

function copy(e: MutableEntry): ProducerEntry {
  return { producerId: e.producerId, epoch: e.epoch, lastTimestampMs: e.lastTimestampMs, batches: e.batches.map((b) => ({ ...b })) };
}

function checkIdempotentFields(h: RecordBatchHeader, index: number): void {
  if (h.producerId < 0 || h.producerEpoch < 0 || h.baseSequence < 0 || h.lastOffsetDelta < 0) {
    throw new FlotillaError(
      'INVALID_RECORD',
      `batch ${index}: producer id ${h.producerId} with epoch ${h.producerEpoch} and base sequence ${h.baseSequence}: an idempotent batch needs all three >= 0 (or producer id -1)`,
      { batch: index, producerId: h.producerId, producerEpoch: h.producerEpoch, baseSequence: h.baseSequence },
    );
  }
}

function checkSequence(h: RecordBatchHeader, index: number, before: SequenceView | undefined, inThisRequest: boolean): void {
  const details = { batch: index, producerId: h.producerId, producerEpoch: h.producerEpoch, baseSequence: h.baseSequence };
  if (before === undefined) {
    if (h.baseSequence !== 0) {
      throw new FlotillaError(
        'UNKNOWN_PRODUCER_ID',
        `producer ${h.producerId} has no state on this partition (new, expired or evicted) and its batch starts at sequence ${h.baseSequence}, not 0`,
        details,
      );
    }
    return;
  }
  const where = inThisRequest ? 'the previous batch of this request' : 'the partition';
  if (h.producerEpoch < before.epoch) {
    throw new FlotillaError(
      'INVALID_PRODUCER_EPOCH',
      `producer ${h.producerId} epoch ${h.producerEpoch} is older than epoch ${before.epoch} on ${where}: a newer instance fenced it`,
      { ...details, currentEpoch: before.epoch },
    );
  }
  if (h.producerEpoch > before.epoch) {
    if (h.baseSequence !== 0) {
      throw new FlotillaError(
        'OUT_OF_ORDER_SEQUENCE',
        `producer ${h.producerId} starts epoch ${h.producerEpoch} at sequence ${h.baseSequence}: a new epoch starts at 0`,
        { ...details, currentEpoch: before.epoch },
      );
    }
    return;
  }
  if (!isNextSequence(before.lastSeq, h.baseSequence)) {
    throw new FlotillaError(
      'OUT_OF_ORDER_SEQUENCE',
      `producer ${h.producerId} epoch ${h.producerEpoch}: batch starts at sequence ${h.baseSequence}, but ${where} ends at ${before.lastSeq} (expected ${before.lastSeq === INT32_MAX ? 0 : before.lastSeq + 1})`,
      { ...details, lastSequence: before.lastSeq },
    );
  }
}
