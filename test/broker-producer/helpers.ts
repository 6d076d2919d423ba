import { expect } from 'chai';
import { PartitionLog } from '../../broker/log';
import { ProducerStateManager, ProducerStateTable } from '../../broker/producer';
import type { CheckResult, ProducerStateManagerOptions } from '../../broker/producer';
import { encodeRecordBatch, readBatchHeader, splitBatches } from '../../shared/records/record-batch';
import type { RecordBatchHeader } from '../../shared/records/record-batch';

/** Record timestamps of the test batches; the harness clock is a little later (no expiry). */
export const BASE_TIMESTAMP_MS = 1_700_000_000_000;
export const TEST_NOW_MS = (): number => BASE_TIMESTAMP_MS + 60_000;

/** A seeded pseudo-random generator (a failing seed replays). */
export function rng(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n) => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return (s >>> 8) % n;
  };
}

export interface HeaderSpec {
  readonly pid: number;
  readonly epoch?: number;
  readonly seq: number;
  /** Records in the batch; default 1. */
  readonly count?: number;
  readonly baseOffset?: number;
  readonly timestampMs?: number;
}

/** A batch header as the leader sees it in a request (offsets not assigned yet: 0). */
export function hdr(s: HeaderSpec): RecordBatchHeader {
  const count = s.count ?? 1;
  const baseOffset = s.baseOffset ?? 0;
  const ts = s.timestampMs ?? BASE_TIMESTAMP_MS;
  return {
    baseOffset,
    lastOffset: baseOffset + count - 1,
    sizeBytes: 61 + count * 10,
    partitionLeaderEpoch: -1,
    magic: 2,
    crc: (s.pid * 7919 + s.seq * 31 + count) >>> 0,
    attributes: 0,
    lastOffsetDelta: count - 1,
    baseTimestampMs: ts,
    maxTimestampMs: ts,
    producerId: s.pid,
    producerEpoch: s.pid < 0 ? -1 : (s.epoch ?? 0),
    baseSequence: s.pid < 0 ? -1 : s.seq,
    recordCount: count,
  };
}

/** The headers with offsets assigned from `from` (what the log does on a leader). */
export function withOffsets(headers: readonly RecordBatchHeader[], from: number): RecordBatchHeader[] {
  let next = from;
  return headers.map((h) => {
    const out = { ...h, baseOffset: next, lastOffset: next + h.lastOffsetDelta };
    next += h.recordCount;
    return out;
  });
}

/** The leader's produce path over the pure table: check, then "append" at the table's end. */
export function leaderAppend(table: ProducerStateTable, headers: readonly RecordBatchHeader[]): CheckResult & { baseOffset?: number; lastOffset?: number } {
  const verdict = table.check(headers);
  if (verdict.kind === 'duplicate') return verdict;
  const final = withOffsets(headers, table.endOffset);
  table.apply(final);
  return { kind: 'append', baseOffset: final[0]!.baseOffset, lastOffset: final[final.length - 1]!.lastOffset };
}

/** A real encoded batch with producer fields. */
export function realBatch(s: HeaderSpec & { tag?: string }): Buffer {
  const count = s.count ?? 1;
  const records = [];
  for (let i = 0; i < count; i++) {
    records.push({ key: Buffer.from(`k${i}`), value: Buffer.from(`${s.tag ?? 'v'}-${s.pid}-${s.seq + i}`), timestampMs: (s.timestampMs ?? BASE_TIMESTAMP_MS) + i });
  }
  return s.pid < 0
    ? encodeRecordBatch({ records })
    : encodeRecordBatch({ producerId: s.pid, producerEpoch: s.epoch ?? 0, baseSequence: s.seq, records });
}

export function headersOf(records: Buffer): RecordBatchHeader[] {
  return splitBatches(records).map((b) => readBatchHeader(b));
}

/** A leader replica: a real PartitionLog plus its ProducerStateManager, wired as the replica manager would. */
export class LeaderReplica {
  private constructor(
    readonly log: PartitionLog,
    public guard: ProducerStateManager,
  ) {}

  static async open(dir: string, opts: Partial<ProducerStateManagerOptions> = {}): Promise<LeaderReplica> {
    const log = await PartitionLog.open({ dir, config: { segmentBytes: 4096, indexIntervalBytes: 256 } });
    const guard = await ProducerStateManager.open({ dir, log, nowMs: TEST_NOW_MS, ...opts });
    return new LeaderReplica(log, guard);
  }

  /** One produce request for this partition: check, append unless a duplicate, onAppended. */
  async produce(batches: readonly Buffer[], leaderEpoch = 0): Promise<{ kind: 'append' | 'duplicate'; baseOffset: number; lastOffset: number }> {
    const records = Buffer.concat(batches);
    const headers = headersOf(records);
    const verdict = this.guard.check(headers);
    if (verdict.kind === 'duplicate') return verdict;
    const r = await this.log.append(records, { assignOffsets: true, leaderEpoch });
    this.guard.onAppended(withOffsets(headers, r.firstOffset));
    return { kind: 'append', baseOffset: r.firstOffset, lastOffset: r.lastOffset };
  }

  async truncateTo(offset: number): Promise<void> {
    const end = await this.log.truncateTo(offset);
    await this.guard.onTruncated(end);
  }

  async close(): Promise<void> {
    await this.guard.close();
    await this.log.close();
  }
}

/** Asserts two states hold the same producers, in the same order, at the same end offset. */
export function expectSameState(actual: ProducerStateTable, expected: ProducerStateTable, why: string): void {
  expect(actual.endOffset, `${why}: end offset`).to.equal(expected.endOffset);
  expect(actual.entries(), `${why}: entries`).to.deep.equal(expected.entries());
}
