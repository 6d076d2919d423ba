import { expect } from 'chai';
import { PartitionLog } from '../../broker/log';
import { ProducerStateManager, ProducerStateTable } from '../../broker/producer';
import type { ProducerLogReader } from '../../broker/producer';
import { isFlotillaError } from '../../shared/errors/error-codes';
import { readBatchHeader, stampBatch } from '../../shared/records/record-batch';
import { cleanupDirs, tempDir } from '../broker-log/helpers';
import { TEST_NOW_MS, expectSameState, headersOf, realBatch, rng, withOffsets } from './helpers';

// A seeded randomized test of the whole broker side of the idempotent producer: producers
// that send, retry (recent and too old), skip sequences, bump epochs, act as fenced zombies
// and mix in non-idempotent batches; a log that is truncated; a manager that is closed or
// "crashes" and is reopened. After every step:
// - the verdict (append / duplicate with offsets / error) equals a simple model's, computed
//   from scratch from the whole log each time (no window, no snapshot, no incremental state);
// - no idempotent batch is in the log twice and, per producer and epoch, sequences in the log
//   follow each other (the safety property: zero duplicates);
// - a retry answered as a duplicate gets the offsets the original append returned.
// Periodically the manager's state equals a table rebuilt by applying the whole log.
// A failure prints its seed; rerun with that seed to replay.

interface LoggedBatch {
  readonly pid: number;
  readonly epoch: number;
  readonly firstSeq: number;
  readonly lastSeq: number;
  readonly firstOffset: number;
  readonly lastOffset: number;
}

interface Sent {
  readonly pid: number;
  readonly epoch: number;
  readonly seq: number;
  readonly count: number;
  /** Offsets of the original append, when it was appended. */
  offsets?: { baseOffset: number; lastOffset: number };
}

type Verdict = { kind: 'append' } | { kind: 'duplicate'; baseOffset: number; lastOffset: number } | { kind: 'error'; name: string };

/** The rules, from the whole log, statelessly. Multi-batch rules as in producer-state.ts. */
function modelVerdict(log: readonly LoggedBatch[], req: readonly Sent[]): Verdict {
  const pending = new Map<number, { epoch: number; lastSeq: number }>();
  const dups: LoggedBatch[] = [];
  let appends = 0;
  for (const b of req) {
    if (b.pid < 0) {
      appends++;
      continue;
    }
    const lastSeq = b.seq + b.count - 1;
    const hist = log.filter((x) => x.pid === b.pid);
    const latest = hist[hist.length - 1];
    if (latest !== undefined && latest.epoch === b.epoch) {
      const window = hist.filter((x) => x.epoch === latest.epoch).slice(-5);
      const d = window.find((x) => x.firstSeq === b.seq && x.lastSeq === lastSeq);
      if (d !== undefined) {
        dups.push(d);
        pending.set(b.pid, { epoch: b.epoch, lastSeq });
        continue;
      }
    }
    const before = pending.get(b.pid) ?? (latest === undefined ? undefined : { epoch: latest.epoch, lastSeq: latest.lastSeq });
    if (before === undefined) {
      if (b.seq !== 0) return { kind: 'error', name: 'UNKNOWN_PRODUCER_ID' };
    } else if (b.epoch < before.epoch) {
      return { kind: 'error', name: 'INVALID_PRODUCER_EPOCH' };
    } else if (b.epoch > before.epoch) {
      if (b.seq !== 0) return { kind: 'error', name: 'OUT_OF_ORDER_SEQUENCE' };
    } else if (b.seq !== before.lastSeq + 1) {
      return { kind: 'error', name: 'OUT_OF_ORDER_SEQUENCE' };
    }
    pending.set(b.pid, { epoch: b.epoch, lastSeq });
    appends++;
  }
  if (dups.length === 0) return { kind: 'append' };
  if (appends > 0) return { kind: 'error', name: 'OUT_OF_ORDER_SEQUENCE' };
  for (let i = 1; i < dups.length; i++) if (dups[i]!.firstOffset !== dups[i - 1]!.lastOffset + 1) return { kind: 'error', name: 'OUT_OF_ORDER_SEQUENCE' };
  return { kind: 'duplicate', baseOffset: dups[0]!.firstOffset, lastOffset: dups[dups.length - 1]!.lastOffset };
}

/** The log the simulation writes: in memory (fast, many seeds) or a real PartitionLog. */
interface SimLog extends ProducerLogReader {
  append(records: Buffer): Promise<number>;
  truncateTo(offset: number): Promise<number>;
  close(): Promise<void>;
}

class MemoryLog implements SimLog {
  private batches: Buffer[] = [];
  logStartOffset = 0;
  logEndOffset = 0;

  async append(records: Buffer): Promise<number> {
    const first = this.logEndOffset;
    let pos = 0;
    while (pos < records.length) {
      const h = readBatchHeader(records, pos);
      const b = Buffer.from(records.subarray(pos, pos + h.sizeBytes));
      stampBatch(b, 0, this.logEndOffset, 0);
      this.batches.push(b);
      this.logEndOffset += h.recordCount;
      pos += h.sizeBytes;
    }
    return first;
  }

  async read(fromOffset: number, maxBytes: number): Promise<{ records: Buffer; nextOffset: number }> {
    if (fromOffset < this.logStartOffset || fromOffset > this.logEndOffset) throw new Error(`offset ${fromOffset} out of range`);
    const out: Buffer[] = [];
    let bytes = 0;
    let next = fromOffset;
    for (const b of this.batches) {
      const h = readBatchHeader(b);
      if (h.lastOffset < fromOffset) continue;
      if (out.length > 0 && bytes + b.length > maxBytes) break;
      out.push(b);
      bytes += b.length;
      next = h.lastOffset + 1;
    }
    return { records: Buffer.concat(out), nextOffset: next };
  }

  async truncateTo(offset: number): Promise<number> {
    this.batches = this.batches.filter((b) => readBatchHeader(b).lastOffset < offset);
    const last = this.batches[this.batches.length - 1];
    this.logEndOffset = last === undefined ? 0 : readBatchHeader(last).lastOffset + 1;
    return this.logEndOffset;
  }

  async close(): Promise<void> {}
}

class RealLog implements SimLog {
  constructor(private readonly log: PartitionLog) {}
  get logStartOffset(): number {
    return this.log.logStartOffset;
  }
  get logEndOffset(): number {
    return this.log.logEndOffset;
  }
  async append(records: Buffer): Promise<number> {
    return (await this.log.append(records, { assignOffsets: true, leaderEpoch: 0 })).firstOffset;
  }
  read(fromOffset: number, maxBytes: number): Promise<{ records: Buffer; nextOffset: number }> {
    return this.log.read(fromOffset, maxBytes, 'logEnd');
  }
  truncateTo(offset: number): Promise<number> {
    return this.log.truncateTo(offset);
  }
  close(): Promise<void> {
    return this.log.close();
  }
}

interface Producer {
  readonly pid: number;
  epoch: number;
  nextSeq: number;
  /** Requests sent in the current epoch (all of them: retries may pick old ones). */
  sent: Sent[][];
}

async function runSeed(seed: number, steps: number, log: SimLog, dir: string): Promise<{ appended: number; duplicates: number; errors: Map<string, number> }> {
  const r = rng(seed);
  const opts = { dir, log, nowMs: TEST_NOW_MS, snapshotIntervalBatches: 2 + r(40), snapshotsRetained: 1 + r(3), rebuildReadBytes: 200 + r(2000) };
  let guard = await ProducerStateManager.open(opts);
  const model: LoggedBatch[] = [];
  const producers: Producer[] = Array.from({ length: 1 + r(5) }, (_, i) => ({ pid: 1000 + i, epoch: 0, nextSeq: 0, sent: [] }));
  const stats = { appended: 0, duplicates: 0, errors: new Map<string, number>() };

  for (let step = 0; step < steps; step++) {
    const where = `seed ${seed} step ${step}`;
    const action = r(100);
    if (action < 6 && log.logEndOffset > 0) {
      // Truncate to a batch boundary near the end (a follower after a leader change).
      const boundaries = model.map((b) => b.firstOffset).filter((o) => o >= log.logEndOffset - 20);
      const cut = boundaries.length === 0 ? log.logEndOffset : boundaries[r(boundaries.length)]!;
      const end = await log.truncateTo(cut);
      await guard.onTruncated(end);
      while (model.length > 0 && model[model.length - 1]!.lastOffset >= end) model.pop();
      continue;
    }
    if (action < 10) {
      const clean = r(2) === 0;
      const before = ProducerStateTable.restore(guard.state.endOffset, guard.state.entries());
      if (clean) await guard.close();
      else await guard.whenIdle(); // a crash: no final snapshot
      guard = await ProducerStateManager.open(opts);
      expectSameState(guard.state, before, `${where}: reopened (${clean ? 'clean' : 'crash'})`);
      continue;
    }
    // Build a request.
    const p = producers[r(producers.length)]!;
    let req: Sent[];
    const kind = r(100);
    if (kind < 10) {
      req = [{ pid: -1, epoch: -1, seq: 0, count: 1 + r(3) }];
    } else if (kind < 35 && p.sent.length > 0) {
      req = p.sent[p.sent.length - 1 - r(Math.min(p.sent.length, 8))]!; // a retry, maybe too old
    } else if (kind < 40) {
      req = [{ pid: p.pid, epoch: p.epoch, seq: p.nextSeq + 1 + r(3), count: 1 }]; // a gap
    } else if (kind < 44 && p.epoch > 0) {
      req = [{ pid: p.pid, epoch: p.epoch - 1, seq: 0, count: 1 }]; // a fenced zombie
    } else if (kind < 48) {
      p.epoch++;
      p.nextSeq = 0;
      p.sent = [];
      req = [{ pid: p.pid, epoch: p.epoch, seq: 0, count: 1 + r(3) }];
    } else {
      const n = r(4) === 0 ? 2 : 1;
      req = [];
      let seq = p.nextSeq;
      for (let i = 0; i < n; i++) {
        const count = 1 + r(4);
        req.push({ pid: p.pid, epoch: p.epoch, seq, count });
        seq += count;
      }
    }
    const expected = modelVerdict(model, req);
    const records = Buffer.concat(req.map((s) => realBatch({ pid: s.pid, epoch: s.epoch, seq: s.seq, count: s.count })));
    const headers = headersOf(records);
    let actual: Verdict;
    try {
      actual = guard.check(headers);
    } catch (e) {
      if (!isFlotillaError(e)) throw e;
      actual = { kind: 'error', name: e.name };
    }
    expect(actual, `${where}: verdict for ${JSON.stringify(req)}`).to.deep.equal(expected);
    if (actual.kind === 'append') {
      const first = await log.append(records);
      const final = withOffsets(headers, first);
      guard.onAppended(final);
      for (let i = 0; i < req.length; i++) {
        const s = req[i]!;
        if (s.pid >= 0) model.push({ pid: s.pid, epoch: s.epoch, firstSeq: s.seq, lastSeq: s.seq + s.count - 1, firstOffset: final[i]!.baseOffset, lastOffset: final[i]!.lastOffset });
      }
      const offsets = { baseOffset: final[0]!.baseOffset, lastOffset: final[final.length - 1]!.lastOffset };
      if (req[0]!.pid >= 0) {
        const owner = producers.find((x) => x.pid === req[0]!.pid)!;
        if (req[0]!.epoch === owner.epoch && !owner.sent.includes(req)) {
          owner.sent.push(req);
          owner.nextSeq = req[req.length - 1]!.seq + req[req.length - 1]!.count;
        }
        (req as Sent[] & { offsets?: typeof offsets }).offsets = offsets;
      }
      stats.appended++;
    } else if (actual.kind === 'duplicate') {
      stats.duplicates++;
      const known = (req as Sent[] & { offsets?: { baseOffset: number; lastOffset: number } }).offsets;
      if (known !== undefined) expect({ baseOffset: actual.baseOffset, lastOffset: actual.lastOffset }, `${where}: duplicate answered with the original offsets`).to.deep.equal(known);
    } else {
      stats.errors.set(actual.name, (stats.errors.get(actual.name) ?? 0) + 1);
      // The client's way out of a sequence error (KIP-360): a new epoch, starting at 0.
      if (actual.name !== 'INVALID_PRODUCER_EPOCH' && req[0]!.epoch === p.epoch && r(2) === 0) {
        p.epoch++;
        p.nextSeq = 0;
        p.sent = [];
      }
    }
    // Safety: no idempotent batch twice, sequences consecutive per producer and epoch.
    const seen = new Set<string>();
    const lastSeqOf = new Map<string, number>();
    for (const b of model) {
      const key = `${b.pid}/${b.epoch}/${b.firstSeq}`;
      expect(seen.has(key), `${where}: batch ${key} appended twice`).to.equal(false);
      seen.add(key);
      const pe = `${b.pid}/${b.epoch}`;
      const prev = lastSeqOf.get(pe);
      expect(b.firstSeq, `${where}: ${pe} sequence continues`).to.equal(prev === undefined ? 0 : prev + 1);
      lastSeqOf.set(pe, b.lastSeq);
    }
    if (step % 25 === 0) {
      const fresh = new ProducerStateTable(0);
      let next = 0;
      while (next < log.logEndOffset) {
        const got = await log.read(next, 4096, 'logEnd');
        fresh.apply(headersOf(got.records));
        next = got.nextOffset;
      }
      expect(fresh.endOffset).to.equal(log.logEndOffset);
      expect(guard.state.entries().sort((a, b) => a.producerId - b.producerId), `${where}: state = the log replayed`).to.deep.equal(
        fresh.entries().sort((a, b) => a.producerId - b.producerId),
      );
    }
  }
  await guard.close();
  return stats;
}

describe('producer state: seeded random producers, retries, epochs and truncations against a model', () => {
  afterEach(cleanupDirs);

  it('in-memory log, 30 seeds x 300 steps: verdicts equal the model, no batch is ever appended twice', async () => {
    const total = { appended: 0, duplicates: 0, errors: new Map<string, number>() };
    for (let seed = 1; seed <= 30; seed++) {
      const s = await runSeed(seed, 300, new MemoryLog(), await tempDir('producer-sim'));
      total.appended += s.appended;
      total.duplicates += s.duplicates;
      for (const [k, v] of s.errors) total.errors.set(k, (total.errors.get(k) ?? 0) + v);
      await cleanupDirs();
    }
    // The simulation must reach every outcome, or it proves little.
    expect(total.appended).to.be.greaterThan(500);
    expect(total.duplicates).to.be.greaterThan(50);
    for (const name of ['OUT_OF_ORDER_SEQUENCE', 'INVALID_PRODUCER_EPOCH', 'UNKNOWN_PRODUCER_ID']) {
      expect(total.errors.get(name) ?? 0, name).to.be.greaterThan(0);
    }
  });

  it('real PartitionLog, 4 seeds x 200 steps: the same', async () => {
    for (let seed = 101; seed <= 104; seed++) {
      const dir = await tempDir('producer-sim-real');
      const log = await PartitionLog.open({ dir, config: { segmentBytes: 2048, indexIntervalBytes: 256 } });
      const s = await runSeed(seed, 200, new RealLog(log), dir);
      expect(s.appended).to.be.greaterThan(0);
      await log.close();
    }
  });
});
