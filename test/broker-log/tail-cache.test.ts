import { expect } from 'chai';
import { PartitionLog } from '../../broker/log';
import type { LogReadResult, ReadIsolation } from '../../broker/log';
import { TailCache } from '../../broker/log/tail-cache';
import { ManualClock, batch, cleanupDirs, openLog, tempDir } from './helpers';

// The in-memory tail (tailCacheBytes): reads at the log end are served from the newest
// appended batches instead of the file. The property: whatever happens to the log (appends,
// rolls, truncations, restarts, retention, reopen after a clean close or a crash, changing
// the bound), a read gives exactly what the files give, byte for byte. Checked against a
// twin log with the tail switched off, fed the same operations.

/** A seeded pseudo-random generator (tests must replay). */
function rng(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n) => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s % n;
  };
}

const TAIL_BYTES = 3000;

describe('broker/log: in-memory tail', function () {
  this.timeout(60_000);
  afterEach(cleanupDirs);

  it('random appends, truncations, restarts, retention, reopens and reads: memory-served reads equal file-served reads byte for byte', async () => {
    const clock = new ManualClock();
    const base = { segmentBytes: 8192, indexIntervalBytes: 256, retentionBytes: 30_000 };
    const memDir = await tempDir('tail-mem');
    const fileDir = await tempDir('tail-file');
    let tailBytes = TAIL_BYTES;
    const openMem = (): Promise<PartitionLog> => openLog(memDir, { ...base, tailCacheBytes: tailBytes }, { nowMs: clock.nowMs });
    let mem = await openMem();
    const file = await openLog(fileDir, { ...base, tailCacheBytes: 0 }, { nowMs: clock.nowMs });
    const abandoned: PartitionLog[] = [];
    const rand = rng(7);
    let epoch = 0;
    let reads = 0;
    let memoryReadsBefore = 0; // readsFromMemory of instances closed so far

    const compare = (a: LogReadResult, b: LogReadResult, label: string): void => {
      expect(a.nextOffset, `${label}: nextOffset`).to.equal(b.nextOffset);
      expect(Buffer.compare(a.records, b.records), `${label}: bytes (${a.records.length} vs ${b.records.length})`).to.equal(0);
      expect([a.logStartOffset, a.logEndOffset, a.highWatermark], `${label}: offsets`).to.deep.equal([b.logStartOffset, b.logEndOffset, b.highWatermark]);
    };

    for (let step = 0; step < 1500; step++) {
      const op = rand(100);
      const label = `step ${step}`;
      if (op < 45) {
        if (rand(25) === 0) epoch++;
        // Mostly small batches; now and then one larger than the whole tail bound.
        const valueBytes = rand(20) === 0 ? TAIL_BYTES + 500 : rand(400);
        const input = batch(1 + rand(5), { valueBytes, timestampMs: clock.ms, tag: `s${step}.` });
        const a = await mem.append(input, { assignOffsets: true, leaderEpoch: epoch });
        const b = await file.append(input, { assignOffsets: true, leaderEpoch: epoch });
        expect(a.lastOffset, label).to.equal(b.lastOffset);
        clock.advance(1 + rand(20));
        if (rand(3) === 0) {
          const hw = mem.logStartOffset + rand(mem.logEndOffset - mem.logStartOffset + 1);
          mem.setHighWatermark(hw);
          file.setHighWatermark(hw);
        }
      } else if (op < 80) {
        const start = mem.logStartOffset;
        const end = mem.logEndOffset;
        // Mostly at the tail (as followers and caught-up consumers read), sometimes anywhere.
        const offset = rand(4) > 0 ? Math.max(start, end - rand(12)) : start + rand(end - start + 1);
        const maxBytes = rand(4) === 0 ? 1 : 1 + rand(6000);
        const isolation: ReadIsolation = rand(3) === 0 ? 'highWatermark' : 'logEnd';
        const a = await mem.read(offset, maxBytes, isolation);
        const b = await file.read(offset, maxBytes, isolation);
        compare(a, b, `${label}: read(${offset}, ${maxBytes}, ${isolation})`);
        reads++;
      } else if (op < 88) {
        const start = mem.logStartOffset;
        const end = mem.logEndOffset;
        const to = Math.max(start, end - rand(15));
        expect(await mem.truncateTo(to), label).to.equal(await file.truncateTo(to));
      } else if (op < 89) {
        const at = mem.logEndOffset + rand(10);
        await mem.truncateFullyAndStartAt(at);
        await file.truncateFullyAndStartAt(at);
      } else if (op < 93) {
        const a = await mem.deleteOldSegments();
        const b = await file.deleteOldSegments();
        expect(a, label).to.deep.equal(b);
      } else if (op < 96) {
        // Reopen the memory log: after a clean close, or abandoned as by a crash.
        memoryReadsBefore += mem.readsFromMemory;
        if (rand(2) === 0) await mem.close();
        else abandoned.push(mem); // a process crash: what was written is in the page cache
        mem = await openMem();
        expect(mem.tailCachedBytes, `${label}: empty after open`).to.equal(0);
        mem.setHighWatermark(file.highWatermark);
      } else if (op < 98) {
        tailBytes = [0, 500, TAIL_BYTES, 10_000][rand(4)]!;
        await mem.reconfigure({ tailCacheBytes: tailBytes });
      } else {
        clock.advance(1000);
      }
      expect(mem.logEndOffset, label).to.equal(file.logEndOffset);
      expect(mem.tailCachedBytes, `${label}: bound`).to.be.at.most(10_000);
      expect(file.readsFromMemory, `${label}: tail switched off`).to.equal(0);
    }
    // The comparison means something only if many reads were served from memory.
    const fromMemory = memoryReadsBefore + mem.readsFromMemory;
    expect(fromMemory, `${fromMemory} of ${reads} reads from memory`).to.be.greaterThan(reads / 8);
    expect(reads - fromMemory, 'some reads went to the file').to.be.greaterThan(20);
    await mem.close();
    await file.close();
    for (const l of abandoned) await l.close();
  });

  it('the ring buffer (wrapping, eviction, truncation): every batch it answers for has the bytes added, and it holds the newest batch while not empty', () => {
    const rand = rng(11);
    for (const capacity of [1000, 2500, 4096]) {
      const cache = new TailCache();
      const model: { base: number; last: number; bytes: Buffer }[] = [];
      let end = 0;
      for (let step = 0; step < 4000; step++) {
        if (rand(10) < 8 || model.length === 0) {
          const count = 1 + rand(3);
          const bytes = Buffer.alloc(1 + rand(capacity < 2000 ? 700 : 1500));
          for (let i = 0; i < bytes.length; i++) bytes[i] = rand(256);
          cache.add(bytes, end, end + count - 1, capacity);
          model.push({ base: end, last: end + count - 1, bytes: Buffer.from(bytes) });
          bytes.fill(0); // the cache holds a copy
          end += count;
        } else {
          const cut = model.splice(model.length - 1 - rand(Math.min(3, model.length)));
          end = cut[0]!.base;
          cache.truncateFrom(end);
        }
        expect(cache.sizeBytes, `step ${step}`).to.be.at.most(capacity);
        const added = model.length > 0 && model[model.length - 1]!.last === end - 1 && cache.sizeBytes > 0;
        if (added) expect(cache.read(model[model.length - 1]!.base, 1, end, end), `step ${step}: newest`).not.to.equal(undefined);
        for (let i = 0; i < model.length; i++) {
          const b = model[i]!;
          const r = cache.read(b.base, 1, end, end);
          if (r === undefined) continue;
          expect(r.nextOffset, `step ${step}: batch ${i}`).to.equal(b.last + 1);
          expect(Buffer.compare(r.bytes, b.bytes), `capacity ${capacity} step ${step}: bytes of batch ${i} of ${model.length}`).to.equal(0);
        }
      }
    }
  });

  it('the tail holds at most tailCacheBytes of the newest batches, is dropped when the segment rolls, and is not used when off', async () => {
    const dir = await tempDir('tail-bound');
    const log = await openLog(dir, { segmentBytes: 1 << 20, tailCacheBytes: 4096 });
    for (let i = 0; i < 40; i++) await log.append(batch(2, { valueBytes: 300 }), { assignOffsets: true, leaderEpoch: 0 });
    expect(log.tailCachedBytes).to.be.greaterThan(2000).and.at.most(4096);
    // The newest batch is served from memory, the oldest from the file.
    await log.read(log.logEndOffset - 1, 1);
    expect(log.readsFromMemory).to.equal(1);
    await log.read(0, 1);
    expect(log.readsFromMemory).to.equal(1);
    // A roll leaves the new active segment's tail empty until the next append.
    await log.reconfigure({ segmentBytes: 1 });
    await log.append(batch(1), { assignOffsets: true, leaderEpoch: 0 });
    expect(log.segmentBaseOffsets().length).to.equal(2);
    expect(log.tailCachedBytes).to.be.greaterThan(0).and.at.most(4096);
    await log.read(log.logEndOffset - 1, 1);
    expect(log.readsFromMemory).to.equal(2);
    await log.read(log.logEndOffset - 2, 1); // the old segment's newest batch: from the file now
    expect(log.readsFromMemory).to.equal(2);
    // Off: the next append empties it.
    await log.reconfigure({ tailCacheBytes: 0 });
    await log.append(batch(1), { assignOffsets: true, leaderEpoch: 0 });
    expect(log.tailCachedBytes).to.equal(0);
    await log.read(log.logEndOffset - 1, 1);
    expect(log.readsFromMemory).to.equal(2);
    await log.close();
  });
});
