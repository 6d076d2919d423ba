import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { expect } from 'chai';
import {
  CLEAN_SHUTDOWN_FILE,
  DEFAULT_LOG_CONFIG,
  LEADER_EPOCH_CHECKPOINT_FILE,
  PartitionLog,
  decodeRecordBatch,
  decodeRecordBatches,
  encodeRecordBatch,
  readBatchHeader,
} from '../../broker/log';
import { crc32c } from '../../shared/records/crc32c';
import {
  ManualClock,
  SMALL,
  batch,
  cleanupDirs,
  expectFlotillaError,
  openLog,
  readAll,
  segmentLogPath,
  snapshotDir,
  tempDir,
} from './helpers';

// The partition log on real files in a temp dir. Each test names the property it checks.

const LEADER = (leaderEpoch = 0) => ({ assignOffsets: true, leaderEpoch });
const FOLLOWER = (leaderEpoch = 0) => ({ assignOffsets: false, leaderEpoch });

/** A seeded pseudo-random generator (tests must replay). */
function rng(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n) => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s % n;
  };
}

/** Batch header positions in a segment file, parsed from the raw bytes. */
async function batchPositions(file: string): Promise<{ position: number; baseOffset: number; sizeBytes: number }[]> {
  const bytes = await fs.readFile(file);
  const out: { position: number; baseOffset: number; sizeBytes: number }[] = [];
  for (let pos = 0; pos < bytes.length; ) {
    const h = readBatchHeader(bytes, pos);
    out.push({ position: pos, baseOffset: h.baseOffset, sizeBytes: h.sizeBytes });
    pos += h.sizeBytes;
  }
  return out;
}

describe('broker/log: partition log', function () {
  this.timeout(20_000);
  afterEach(cleanupDirs);

  describe('append and read', () => {
    it('the leader assigns offsets contiguously across batches, multi-batch record sets and segment rolls', async () => {
      const dir = await tempDir();
      const log = await openLog(dir);
      const rand = rng(1);
      const sent: string[] = [];
      for (let i = 0; i < 120; i++) {
        const sets = i % 10 === 0 ? 3 : 1; // every tenth append carries three batches
        const parts: Buffer[] = [];
        let count = 0;
        for (let s = 0; s < sets; s++) {
          const n = 1 + rand(5);
          parts.push(batch(n, { tag: `a${i}.${s}.` }));
          for (let r = 0; r < n; r++) sent.push(`a${i}.${s}.${r}-`);
          count += n;
        }
        const input = Buffer.concat(parts);
        const before = log.logEndOffset;
        const res = await log.append(input, LEADER());
        expect(res.firstOffset).to.equal(before);
        expect(res.lastOffset).to.equal(before + count - 1);
        expect(res.logEndOffset).to.equal(before + count);
        expect(res.batchCount).to.equal(sets);
        expect(readBatchHeader(input).baseOffset, "the caller's buffer is not stamped").to.equal(0);
      }
      expect(log.segmentBaseOffsets().length).to.be.greaterThan(4);
      const records = await readAll(log);
      expect(records.length).to.equal(sent.length);
      expect(records.map((r) => r.value!.toString().slice(0, sent[r.offset]!.length))).to.deep.equal(sent);
      await log.close();
    });

    it('round trip across reopen: a clean close and a crash (no close) both give back the same records and epochs', async () => {
      const dir = await tempDir();
      const log = await openLog(dir);
      for (let i = 0; i < 40; i++) await log.append(batch(3, { tag: `r${i}.` }), LEADER(i < 20 ? 1 : 4));
      const before = await readAll(log);
      const epochs = log.epochEntries();
      await log.close();
      expect(await fs.readdir(dir)).to.include(CLEAN_SHUTDOWN_FILE);

      const reopened = await openLog(dir);
      expect(await fs.readdir(dir)).not.to.include(CLEAN_SHUTDOWN_FILE);
      expect(await readAll(reopened)).to.deep.equal(before);
      expect(reopened.epochEntries()).to.deep.equal(epochs);
      expect(epochs).to.deep.equal([
        { epoch: 1, startOffset: 0 },
        { epoch: 4, startOffset: 60 },
      ]);
      await reopened.append(batch(2), LEADER(4)); // then "crash": never closed
      const crashed = await openLog(dir);
      expect((await readAll(crashed)).length).to.equal(before.length + 2);
      expect(crashed.logEndOffset).to.equal(122);
      await crashed.close();
      await reopened.close(); // the abandoned instance: only to release its files
    });

    it('a follower keeps the leader’s offsets and epochs, byte for byte', async () => {
      const leader = await openLog(await tempDir('leader'));
      for (let i = 0; i < 30; i++) await leader.append(batch(2, { tag: `f${i}.` }), LEADER(i < 15 ? 0 : 3));
      const follower = await openLog(await tempDir('follower'));
      let next = 0;
      while (next < leader.logEndOffset) {
        const r = await leader.read(next, 700);
        const res = await follower.append(r.records, FOLLOWER(3));
        expect(res.firstOffset).to.equal(next);
        next = r.nextOffset;
      }
      expect(follower.logEndOffset).to.equal(leader.logEndOffset);
      expect(follower.epochEntries()).to.deep.equal(leader.epochEntries());
      for (const o of [0, 17, 31, 59]) expect((await follower.read(o, 10_000)).records).to.deep.equal((await leader.read(o, 10_000)).records);
      await leader.close();
      await follower.close();
    });

    it('one append of many batches (written a segment at a time) crosses rolls and epochs: byte for byte, also after a crash', async () => {
      const leader = await openLog(await tempDir('leader'), { segmentBytes: 1 << 20, indexIntervalBytes: 256 });
      for (let i = 0; i < 60; i++) await leader.append(batch(1 + (i % 3), { tag: `m${i}.`, valueBytes: 40 + i }), LEADER(Math.floor(i / 20) * 2));
      const all = await leader.read(0, 1 << 20);
      expect(all.nextOffset).to.equal(leader.logEndOffset);
      const dir = await tempDir('follower');
      const follower = await openLog(dir, SMALL); // 4 KiB segments: the one append rolls several times
      const res = await follower.append(all.records, FOLLOWER(4));
      expect(res.batchCount).to.equal(60);
      expect(follower.segmentBaseOffsets().length).to.be.greaterThan(2);
      const check = async (l: PartitionLog, label: string): Promise<void> => {
        expect(l.logEndOffset, label).to.equal(leader.logEndOffset);
        expect(l.epochEntries(), label).to.deep.equal(leader.epochEntries());
        const files = await Promise.all(l.segmentBaseOffsets().map((b) => fs.readFile(segmentLogPath(dir, b))));
        expect(Buffer.compare(Buffer.concat(files), all.records), `${label}: the .log files hold the batches as sent`).to.equal(0);
        for (let o = 0; o < leader.logEndOffset; o++) {
          expect((await l.read(o, 1)).records, `${label}: read ${o}`).to.deep.equal((await leader.read(o, 1)).records);
        }
      };
      await check(follower, 'live');
      const crashed = await openLog(dir, SMALL); // never closed: an unclean shutdown
      await check(crashed, 'after a crash');
      await crashed.close();
      await follower.close();
      await leader.close();
    });

    it('reads return whole batches only: at least one even past maxBytes, never a partial one', async () => {
      const log = await openLog(await tempDir());
      for (let i = 0; i < 10; i++) await log.append(batch(4), LEADER());
      const size = readBatchHeader((await log.read(0, 1)).records).sizeBytes;
      expect((await log.read(0, 1)).records.length, 'one whole batch past maxBytes').to.equal(size);
      expect((await log.read(0, size * 3 - 1)).records.length).to.equal(size * 2);
      const mid = await log.read(6, size); // offset 6 is inside the batch [4, 7]
      expect(decodeRecordBatch(mid.records).baseOffset).to.equal(4);
      expect(mid.nextOffset).to.equal(8);
      const end = await log.read(log.logEndOffset, 1000);
      expect(end.records.length).to.equal(0);
      expect(end.nextOffset).to.equal(40);
      await log.close();
    });

    it('high watermark isolation: consumers see only batches wholly below it; it stays within the log', async () => {
      const log = await openLog(await tempDir());
      for (let i = 0; i < 5; i++) await log.append(batch(2), LEADER());
      expect(log.highWatermark).to.equal(0);
      expect(log.setHighWatermark(5)).to.equal(5);
      const r = await log.read(0, 10_000, 'highWatermark');
      expect(decodeRecordBatches(r.records).map((b) => b.lastOffset)).to.deep.equal([1, 3]); // [4, 5] straddles 5
      expect(r.highWatermark).to.equal(5);
      expect((await log.read(5, 10_000, 'highWatermark')).records.length).to.equal(0);
      expect((await log.read(5, 10_000, 'logEnd')).records.length).to.be.greaterThan(0);
      expect(log.setHighWatermark(99)).to.equal(10);
      await log.close();
    });
  });

  describe('bad input is refused with a typed error and the log unchanged', () => {
    it('too large, corrupt, torn, empty, invalid, stale epoch or non-contiguous: nothing is written', async () => {
      const dir = await tempDir();
      const log = await openLog(dir, { ...SMALL, maxMessageBytes: 600 });
      for (let i = 0; i < 3; i++) await log.append(batch(3), LEADER(2));
      await log.flush();
      const before = await snapshotDir(dir);
      const leo = log.logEndOffset;

      const big = batch(20, { valueBytes: 40 });
      let e = await expectFlotillaError(log.append(Buffer.concat([batch(1), big]), LEADER(2)), 'RECORD_TOO_LARGE');
      expect(e.details).to.include({ maxMessageBytes: 600, sizeBytes: big.length });

      const flipped = batch(3);
      flipped[flipped.length - 3] ^= 0xff;
      e = await expectFlotillaError(log.append(Buffer.concat([batch(1), flipped]), LEADER(2)), 'CORRUPT_RECORD');
      expect(e.retriable).to.equal(true);
      const good = batch(2);
      await expectFlotillaError(log.append(Buffer.concat([good, good.subarray(0, 40)]), LEADER(2)), 'CORRUPT_RECORD');
      await expectFlotillaError(log.append(Buffer.alloc(0), LEADER(2)), 'INVALID_RECORD');

      const gzip = batch(2);
      gzip.writeInt16BE(1, 21);
      gzip.writeUInt32BE(crc32c(gzip.subarray(21)), 17);
      await expectFlotillaError(log.append(gzip, LEADER(2)), 'INVALID_RECORD');

      e = await expectFlotillaError(log.append(batch(1), LEADER(1)), 'FENCED_LEADER_EPOCH');
      expect(e.details).to.include({ leaderEpoch: 1, latestEpoch: 2 });

      const gap = encodeRecordBatch({ baseOffset: leo + 1, partitionLeaderEpoch: 2, records: [{ value: null, timestampMs: 1 }] });
      e = await expectFlotillaError(log.append(gap, FOLLOWER(2)), 'UNEXPECTED_APPEND_OFFSET');
      expect(e.details).to.include({ baseOffset: leo + 1, expectedOffset: leo });
      const overlap = encodeRecordBatch({ baseOffset: leo - 1, partitionLeaderEpoch: 2, records: [{ value: null, timestampMs: 1 }] });
      await expectFlotillaError(log.append(overlap, FOLLOWER(2)), 'UNEXPECTED_APPEND_OFFSET');
      const futureEpoch = encodeRecordBatch({ baseOffset: leo, partitionLeaderEpoch: 9, records: [{ value: null, timestampMs: 1 }] });
      await expectFlotillaError(log.append(futureEpoch, FOLLOWER(2)), 'INVALID_RECORD');
      const pastEpoch = encodeRecordBatch({ baseOffset: leo, partitionLeaderEpoch: 1, records: [{ value: null, timestampMs: 1 }] });
      await expectFlotillaError(log.append(pastEpoch, FOLLOWER(2)), 'INVALID_RECORD');

      expect(log.logEndOffset).to.equal(leo);
      expect(await snapshotDir(dir)).to.deep.equal(before);
      const ok = await log.append(batch(1), LEADER(2));
      expect(ok.firstOffset, 'the log still works after refusals').to.equal(leo);
      await log.close();
    });

    it('reading outside [logStartOffset, logEndOffset] is OFFSET_OUT_OF_RANGE', async () => {
      const log = await openLog(await tempDir());
      await log.append(batch(3), LEADER());
      await expectFlotillaError(log.read(4, 100), 'OFFSET_OUT_OF_RANGE');
      await expectFlotillaError(log.read(-1, 100), 'OFFSET_OUT_OF_RANGE');
      await expectFlotillaError(log.read(0, 0), 'INVALID_REQUEST');
      await log.close();
    });
  });

  describe('lookups across many segments (sparse indexes, binary search)', () => {
    it('read(offset) finds the batch holding every offset, and lookupByTimestamp matches a brute-force scan, before and after reopen', async () => {
      const dir = await tempDir();
      const config = { segmentBytes: 2048, indexIntervalBytes: 200 };
      let log = await openLog(dir, config);
      const rand = rng(42);
      const all: { offset: number; ts: number; value: string }[] = [];
      let ts = 10_000;
      for (let i = 0; i < 400; i++) {
        const n = 1 + rand(4);
        const timestamps: number[] = [];
        for (let r = 0; r < n; r++) {
          // Mostly rising, sometimes a record from the past: timestamps are not monotonic.
          ts += rand(10) === 0 ? -rand(500) : rand(50);
          timestamps.push(Math.max(ts, 0));
        }
        const res = await log.append(batch(n, { timestamps, tag: `x${i}.` }), LEADER());
        for (let r = 0; r < n; r++) all.push({ offset: res.firstOffset + r, ts: timestamps[r]!, value: `x${i}.${r}-` });
      }
      expect(log.segmentBaseOffsets().length).to.be.greaterThan(20);

      const bruteForce = (target: number): { offset: number; timestampMs: number } | null => {
        const hit = all.find((r) => r.ts >= target);
        return hit === undefined ? null : { offset: hit.offset, timestampMs: hit.ts };
      };
      const check = async (l: PartitionLog, label: string): Promise<void> => {
        for (const want of all) {
          const r = await l.read(want.offset, 1);
          const b = decodeRecordBatch(r.records);
          expect(b.baseOffset <= want.offset && want.offset <= b.lastOffset, `${label}: read ${want.offset}`).to.equal(true);
          expect(b.records[want.offset - b.baseOffset]!.value!.toString().startsWith(want.value), `${label}: value at ${want.offset}`).to.equal(true);
        }
        const targets = [0, -5, ts + 1_000, ...all.filter((_, i) => i % 7 === 0).flatMap((r) => [r.ts - 1, r.ts, r.ts + 1])];
        for (const t of targets) expect(await l.lookupByTimestamp(t), `${label}: timestamp ${t}`).to.deep.equal(bruteForce(t));
      };
      await check(log, 'live');
      await log.close();
      log = await openLog(dir, config);
      await check(log, 'after a clean reopen');
      // Index files lost or scrambled: they are checked against the .log and rebuilt on open.
      await log.close();
      let n = 0;
      for (const f of (await fs.readdir(dir)).sort()) {
        if (!f.endsWith('.index') && !f.endsWith('.timeindex')) continue;
        const p = path.join(dir, f);
        if (n++ % 2 === 0) await fs.unlink(p);
        else await fs.writeFile(p, Buffer.alloc((await fs.stat(p)).size + 3, 0x5a));
      }
      log = await openLog(dir, config);
      await check(log, 'after losing or scrambling the index files');
      await log.close();
    });
  });

  describe('corruption and crash recovery', () => {
    it('index entries not yet written to their files when the process dies (or files cut short after a clean close) are recovered: every lookup is right', async () => {
      const dir = await tempDir();
      // One big active segment and a small interval: many index entries, all still pending
      // (fewer than INDEX_WRITE_BATCH_ENTRIES), so the .index/.timeindex files stay empty.
      const config = { segmentBytes: 1 << 20, indexIntervalBytes: 150 };
      const log = await openLog(dir, config);
      const all: { offset: number; ts: number }[] = [];
      for (let i = 0; i < 120; i++) {
        const timestamps = [10_000 + i * 10, 10_000 + i * 10 + 3];
        const res = await log.append(batch(2, { timestamps, tag: `p${i}.` }), LEADER());
        all.push({ offset: res.firstOffset, ts: timestamps[0]! }, { offset: res.firstOffset + 1, ts: timestamps[1]! });
      }
      const stem = path.join(dir, '00000000000000000000');
      expect((await fs.stat(`${stem}.index`)).size, 'entries pending, not written').to.equal(0);
      expect((await fs.stat(`${stem}.timeindex`)).size).to.equal(0);
      const check = async (l: PartitionLog, label: string): Promise<void> => {
        expect(l.logEndOffset, label).to.equal(240);
        for (const want of all) {
          const b = decodeRecordBatch((await l.read(want.offset, 1)).records);
          expect(b.baseOffset <= want.offset && want.offset <= b.lastOffset, `${label}: read ${want.offset}`).to.equal(true);
          expect(await l.lookupByTimestamp(want.ts), `${label}: timestamp ${want.ts}`).to.deep.equal({ offset: want.offset, timestampMs: want.ts });
        }
      };
      await check(log, 'live');

      // "Crash": the instance is abandoned without close, its pending entries never written.
      const recovered = await openLog(dir, config);
      await check(recovered, 'after a crash with unwritten index entries');
      const entries = (await fs.stat(`${stem}.index`)).size / 8;
      expect(entries, 'rebuilt on open').to.be.greaterThan(10);
      expect((await fs.stat(`${stem}.timeindex`)).size).to.equal(entries * 12);
      await recovered.close();
      await log.close(); // the abandoned instance: only to release its files

      // After a clean close only the tail after the last index entry is validated: index files
      // that are a short prefix, torn, or missing must still give the same lookups.
      const cuts: [number, number][] = [
        [entries - 5, entries - 5], // both short by five entries
        [3, 3],
        [0, 0], // empty
        [entries, entries - 1], // the time index one entry short
        [entries - 1, entries], // the offset index one entry short
      ];
      for (const [o, t] of cuts) {
        const l = await openLog(dir, config);
        await l.close();
        await fs.truncate(`${stem}.index`, o * 8);
        await fs.truncate(`${stem}.timeindex`, t * 12 + (o === t ? 5 : 0)); // + a torn entry
        const reopened = await openLog(dir, config);
        await check(reopened, `after a clean close with index files cut to ${o}/${t} entries`);
        await reopened.close();
      }
      await fs.unlink(`${stem}.index`);
      const last = await openLog(dir, config);
      await check(last, 'after a clean close with the offset index deleted');
      await last.close();
    });

    it('CRC corruption on disk is detected on read: CORRUPT_RECORD for the bad batch, only the validated batches before it', async () => {
      const dir = await tempDir();
      const log = await openLog(dir);
      for (let i = 0; i < 60; i++) await log.append(batch(3, { tag: `c${i}.` }), LEADER());
      expect(log.segmentBaseOffsets().length).to.be.greaterThan(2);
      await log.close();
      const file = segmentLogPath(dir, 0);
      const victim = (await batchPositions(file))[2]!; // early: before the segment's last index entry
      const bytes = await fs.readFile(file);
      bytes[victim.position + victim.sizeBytes - 5] ^= 0x40; // inside a record value
      await fs.writeFile(file, bytes);

      const reopened = await openLog(dir); // clean shutdown: a closed segment is not rescanned
      const e = await expectFlotillaError(reopened.read(victim.baseOffset, 1_000_000), 'CORRUPT_RECORD');
      expect(e.message).to.match(/CRC32C mismatch/);
      const before = await reopened.read(0, 1_000_000);
      expect(before.nextOffset, 'stops before the corrupt batch').to.equal(victim.baseOffset);
      expect(decodeRecordBatches(before.records).map((b) => b.baseOffset)).to.deep.equal([0, 3]);
      await reopened.close();
    });

    it('torn tail: half a batch at the end of the active segment is cut on open; the log ends at the last whole batch', async () => {
      const dir = await tempDir();
      const log = await openLog(dir);
      for (let i = 0; i < 8; i++) await log.append(batch(2), LEADER(1));
      const leo = log.logEndOffset;
      const active = segmentLogPath(dir, log.segmentBaseOffsets().at(-1)!);
      const goodSize = (await fs.stat(active)).size;
      const next = encodeRecordBatch({ baseOffset: leo, partitionLeaderEpoch: 1, records: [{ value: Buffer.alloc(100, 1), timestampMs: 5 }] });
      await fs.appendFile(active, next.subarray(0, next.length >> 1)); // the crash tore this write
      // No close: an unclean shutdown.
      const recovered = await openLog(dir);
      expect(recovered.logEndOffset).to.equal(leo);
      expect((await fs.stat(active)).size).to.equal(goodSize);
      expect((await readAll(recovered)).length).to.equal(leo);
      const res = await recovered.append(batch(1), LEADER(1));
      expect(res.firstOffset, 'appends continue at the cut').to.equal(leo);
      await recovered.close();
      await log.close(); // the abandoned instance: only to release its files
    });

    it('garbage after a clean close is found by the tail check and cut', async () => {
      const dir = await tempDir();
      const log = await openLog(dir);
      for (let i = 0; i < 30; i++) await log.append(batch(3), LEADER());
      const leo = log.logEndOffset;
      await log.close();
      const active = segmentLogPath(dir, log.segmentBaseOffsets().at(-1)!);
      await fs.appendFile(active, Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 37) & 0xff)));
      const recovered = await openLog(dir);
      expect(recovered.logEndOffset).to.equal(leo);
      expect((await readAll(recovered)).length).to.equal(leo);
      await recovered.close();
    });

    it('unclean shutdown: a corrupt batch in the middle of the active segment cuts the log there, indexes rebuilt', async () => {
      const dir = await tempDir();
      const log = await openLog(dir, { segmentBytes: 1 << 20, indexIntervalBytes: 256 });
      for (let i = 0; i < 40; i++) await log.append(batch(3, { timestampMs: 1_000 + i * 10 }), LEADER(i < 30 ? 0 : 1));
      // crash: no close
      const file = segmentLogPath(dir, 0);
      const victim = (await batchPositions(file))[25]!;
      const bytes = await fs.readFile(file);
      bytes[victim.position + 40] ^= 0x01; // the max timestamp field: covered by the CRC
      await fs.writeFile(file, bytes);
      const recovered = await openLog(dir, { segmentBytes: 1 << 20, indexIntervalBytes: 256 });
      expect(recovered.logEndOffset).to.equal(victim.baseOffset);
      expect((await fs.stat(file)).size).to.equal(victim.position);
      expect((await readAll(recovered)).length).to.equal(victim.baseOffset);
      // The epoch that began after the cut is gone from the cache too.
      expect(recovered.epochEntries()).to.deep.equal([{ epoch: 0, startOffset: 0 }]);
      expect(await recovered.lookupByTimestamp(1_000 + 24 * 10 + 2)).to.deep.equal({ offset: 74, timestampMs: 1_242 });
      expect(await recovered.lookupByTimestamp(1_000 + 25 * 10)).to.equal(null);
      await recovered.close();
      await log.close(); // the abandoned instance: only to release its files
    });

    it('a missing or corrupt epoch checkpoint is rebuilt from the batch headers', async () => {
      const dir = await tempDir();
      const log = await openLog(dir);
      for (let i = 0; i < 30; i++) await log.append(batch(2), LEADER(i < 10 ? 0 : i < 20 ? 3 : 4));
      const epochs = log.epochEntries();
      await log.close();
      await fs.unlink(path.join(dir, LEADER_EPOCH_CHECKPOINT_FILE));
      let reopened = await openLog(dir);
      expect(reopened.epochEntries()).to.deep.equal(epochs);
      await reopened.close();
      await fs.writeFile(path.join(dir, LEADER_EPOCH_CHECKPOINT_FILE), 'not a checkpoint');
      reopened = await openLog(dir);
      expect(reopened.epochEntries()).to.deep.equal(epochs);
      await reopened.close();
    });

    it('a gap between segments (a lost file) refuses to open with STORAGE_ERROR rather than serve a hole', async () => {
      const dir = await tempDir();
      const log = await openLog(dir);
      for (let i = 0; i < 60; i++) await log.append(batch(3), LEADER());
      const bases = log.segmentBaseOffsets();
      await log.close();
      await fs.unlink(segmentLogPath(dir, bases[1]!));
      await expectFlotillaError(openLog(dir), 'STORAGE_ERROR');
    });
  });

  describe('retention (whole segments, never the active one)', () => {
    it('by size: oldest segments go while the rest is still >= retention.bytes; reading below the new start is OFFSET_OUT_OF_RANGE', async () => {
      const dir = await tempDir();
      const log = await openLog(dir, { ...SMALL, retentionBytes: 10_000, retentionMs: Infinity }); // 1970 timestamps: time would delete all
      for (let i = 0; i < 120; i++) await log.append(batch(3), LEADER(i < 60 ? 0 : 1));
      const bases = log.segmentBaseOffsets();
      expect(bases.length).to.be.greaterThan(4);
      const res = await log.deleteOldSegments();
      expect(res.deletedSegments).to.be.greaterThan(0);
      expect(log.segmentBaseOffsets()).to.deep.equal(bases.slice(res.deletedSegments));
      expect(log.logStartOffset).to.equal(bases[res.deletedSegments]);
      expect(log.sizeBytes).to.be.at.least(10_000);
      const oldestLeft = (await fs.stat(segmentLogPath(dir, log.logStartOffset))).size;
      expect(log.sizeBytes - oldestLeft, 'one more would go below retention.bytes').to.be.lessThan(10_000);
      expect(await fs.readdir(dir)).not.to.include(path.basename(segmentLogPath(dir, 0)));
      const e = await expectFlotillaError(log.read(log.logStartOffset - 1, 100), 'OFFSET_OUT_OF_RANGE');
      expect(e.details).to.include({ logStartOffset: log.logStartOffset });
      expect((await readAll(log)).length).to.equal(log.logEndOffset - log.logStartOffset);
      expect(log.epochEntries()[0]!.startOffset).to.be.at.least(log.logStartOffset);
      expect(log.highWatermark).to.equal(log.logStartOffset);
      expect((await log.deleteOldSegments()).deletedSegments, 'idempotent').to.equal(0);
      await log.close();
      const reopened = await openLog(dir, { ...SMALL, retentionBytes: 10_000 });
      expect(reopened.logStartOffset, 'the start offset survives a reopen').to.equal(log.logStartOffset);
      await reopened.close();
    });

    it('by time (injected clock): segments whose newest record is older than retention.ms go; the active one stays', async () => {
      const clock = new ManualClock();
      const dir = await tempDir();
      const log = await openLog(dir, { ...SMALL, retentionMs: 60_000 }, { nowMs: clock.nowMs });
      for (let i = 0; i < 100; i++) {
        await log.append(batch(3, { timestampMs: clock.ms }), LEADER());
        clock.advance(1_000);
      }
      const bases = log.segmentBaseOffsets();
      expect(bases.length).to.be.greaterThan(3);
      expect((await log.deleteOldSegments()).deletedSegments, 'everything is younger than 100 s').to.be.lessThan(bases.length - 1);
      // Every record left is at most 60 s old, but for the oldest kept segment holding newer ones.
      const first = await log.read(log.logStartOffset, 1_000_000);
      const newest = Math.max(...decodeRecordBatches(first.records).map((b) => b.maxTimestampMs));
      expect(clock.ms - newest).to.be.at.most(60_000);
      clock.advance(1_000_000);
      const res = await log.deleteOldSegments();
      expect(log.segmentBaseOffsets()).to.deep.equal([bases.at(-1)]);
      expect(res.logStartOffset).to.equal(bases.at(-1));
      expect(log.logEndOffset).to.equal(300);
      await log.close();
    });
  });

  describe('segments roll', () => {
    it('at segment.bytes: no segment exceeds it, each file named by its base offset', async () => {
      const dir = await tempDir();
      const log = await openLog(dir);
      for (let i = 0; i < 80; i++) await log.append(batch(3), LEADER());
      for (const base of log.segmentBaseOffsets()) {
        expect((await fs.stat(segmentLogPath(dir, base))).size).to.be.at.most(4096);
        expect(readBatchHeader(await fs.readFile(segmentLogPath(dir, base))).baseOffset).to.equal(base);
      }
      await log.close();
    });

    it('at segment.ms (injected clock), counted from the first append into the segment', async () => {
      const clock = new ManualClock();
      const log = await openLog(await tempDir(), { segmentMs: 1_000 }, { nowMs: clock.nowMs });
      await log.append(batch(1), LEADER());
      clock.advance(999);
      await log.append(batch(1), LEADER());
      expect(log.segmentBaseOffsets()).to.deep.equal([0]);
      clock.advance(1);
      await log.append(batch(1), LEADER());
      expect(log.segmentBaseOffsets()).to.deep.equal([0, 2]);
      await log.close();
    });
  });

  describe('truncation and the leader-epoch cache', () => {
    it('truncateTo drops whole batches from the end, the epochs that began there, and clamps the high watermark', async () => {
      const dir = await tempDir();
      const log = await openLog(dir);
      for (let i = 0; i < 3; i++) await log.append(batch(3), LEADER(0)); // 0..8
      for (let i = 0; i < 2; i++) await log.append(batch(3), LEADER(2)); // 9..14
      for (let i = 0; i < 2; i++) await log.append(batch(3), LEADER(5)); // 15..20
      expect(log.epochEntries()).to.deep.equal([
        { epoch: 0, startOffset: 0 },
        { epoch: 2, startOffset: 9 },
        { epoch: 5, startOffset: 15 },
      ]);
      expect(log.endOffsetForEpoch(5)).to.deep.equal({ epoch: 5, endOffset: 21 });
      expect(log.endOffsetForEpoch(2)).to.deep.equal({ epoch: 2, endOffset: 15 });
      expect(log.endOffsetForEpoch(1)).to.deep.equal({ epoch: 0, endOffset: 9 });
      log.setHighWatermark(21);

      expect(await log.truncateTo(15)).to.equal(15); // a follower told "epoch 2 ended at 15"
      expect(log.epochEntries().map((e) => e.epoch)).to.deep.equal([0, 2]);
      expect(log.endOffsetForEpoch(2)).to.deep.equal({ epoch: 2, endOffset: 15 });
      expect(log.highWatermark).to.equal(15);
      expect(await log.truncateTo(10), 'inside the batch [9, 11]: the whole batch goes').to.equal(9);
      expect(log.epochEntries()).to.deep.equal([{ epoch: 0, startOffset: 0 }]);
      expect(await log.truncateTo(100), 'past the end: no change').to.equal(9);
      await log.append(batch(2), LEADER(7));
      expect(log.epochEntries().at(-1)).to.deep.equal({ epoch: 7, startOffset: 9 });
      await log.close();

      const reopened = await openLog(dir);
      expect(reopened.logEndOffset).to.equal(11);
      expect(reopened.epochEntries()).to.deep.equal([
        { epoch: 0, startOffset: 0 },
        { epoch: 7, startOffset: 9 },
      ]);
      expect((await readAll(reopened)).length).to.equal(11);
      await reopened.close();
    });

    it('truncateTo across many segments deletes the later segment files; appends and lookups continue', async () => {
      const dir = await tempDir();
      const log = await openLog(dir);
      for (let i = 0; i < 100; i++) await log.append(batch(3, { timestampMs: i * 100 }), LEADER(Math.floor(i / 25)));
      const bases = log.segmentBaseOffsets();
      const target = bases[2]! + 4;
      const end = await log.truncateTo(target);
      expect(end).to.equal(target - (target % 3));
      expect(log.segmentBaseOffsets()).to.deep.equal(bases.slice(0, 3));
      const logFiles = (await fs.readdir(dir)).filter((f) => f.endsWith('.log'));
      expect(logFiles.length).to.equal(3);
      expect(await log.lookupByTimestamp((end / 3 - 1) * 100 + 3), 'no record past the cut').to.equal(null);
      expect(await log.lookupByTimestamp((end / 3 - 1) * 100 + 2)).to.deep.equal({ offset: end - 1, timestampMs: (end / 3 - 1) * 100 + 2 });
      const res = await log.append(batch(3, { timestampMs: 50_000 }), LEADER(9));
      expect(res.firstOffset).to.equal(end);
      expect(await log.lookupByTimestamp(20_000)).to.deep.equal({ offset: end, timestampMs: 50_000 });
      expect((await readAll(log)).length).to.equal(end + 3);
      await log.close();
    });

    it('truncateFullyAndStartAt (and truncateTo below the start) empties the log and restarts it at the offset', async () => {
      const dir = await tempDir();
      const log = await openLog(dir);
      for (let i = 0; i < 10; i++) await log.append(batch(3), LEADER(1));
      await log.truncateFullyAndStartAt(1_000);
      expect([log.logStartOffset, log.logEndOffset, log.highWatermark]).to.deep.equal([1_000, 1_000, 1_000]);
      expect(log.epochEntries()).to.deep.equal([]);
      await expectFlotillaError(log.read(0, 100), 'OFFSET_OUT_OF_RANGE');
      const fromLeader = encodeRecordBatch({ baseOffset: 1_000, partitionLeaderEpoch: 4, records: [{ value: null, timestampMs: 1 }] });
      await log.append(fromLeader, FOLLOWER(4));
      expect(await log.truncateTo(500)).to.equal(500);
      expect([log.logStartOffset, log.logEndOffset]).to.deep.equal([500, 500]);
      await log.append(batch(2), LEADER(5));
      await log.close();
      const reopened = await openLog(dir);
      expect([reopened.logStartOffset, reopened.logEndOffset]).to.deep.equal([500, 502]);
      expect(reopened.epochEntries()).to.deep.equal([{ epoch: 5, startOffset: 500 }]);
      await reopened.close();
    });
  });

  describe('flush policy', () => {
    it('default: neither flush.messages nor flush.ms triggers (Kafka defaults, shared with the topic config table)', async () => {
      expect(DEFAULT_LOG_CONFIG.flushMessages).to.equal(Number.MAX_SAFE_INTEGER);
      expect(DEFAULT_LOG_CONFIG.flushMs).to.equal(Number.MAX_SAFE_INTEGER);
      const log = await PartitionLog.open({ dir: await tempDir() });
      const res = await log.append(batch(5), LEADER());
      expect(res.flushed).to.equal(false);
      expect(log.durableOffset).to.equal(0);
      await log.flush();
      expect(log.durableOffset).to.equal(5);
      await log.close();
    });

    it('flush.messages=3 fsyncs on the append that reaches 3 unflushed records; flush.ms via maybeFlush', async () => {
      const clock = new ManualClock();
      const log = await openLog(await tempDir(), { flushMessages: 3, flushMs: 5_000 }, { nowMs: clock.nowMs });
      expect((await log.append(batch(1), LEADER())).flushed).to.equal(false);
      expect((await log.append(batch(1), LEADER())).flushed).to.equal(false);
      expect((await log.append(batch(1), LEADER())).flushed).to.equal(true);
      expect(log.durableOffset).to.equal(3);
      await log.append(batch(1), LEADER());
      clock.advance(4_999);
      expect(await log.maybeFlush()).to.equal(false);
      clock.advance(1);
      expect(await log.maybeFlush()).to.equal(true);
      expect(log.durableOffset).to.equal(4);
      expect(await log.maybeFlush(), 'nothing left to flush').to.equal(false);
      await log.close();
    });
  });
});
