import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { expect } from 'chai';
import { PartitionLog } from '../../broker/log';
import { ProducerStateManager, ProducerStateTable, decodeSnapshot, encodeSnapshot, listSnapshots, snapshotFileName } from '../../broker/producer';
import type { ProducerSnapshot } from '../../broker/producer';
import { cleanupDirs, expectThrowsFlotilla, tempDir } from '../broker-log/helpers';
import { LeaderReplica, TEST_NOW_MS, expectSameState, headersOf, realBatch } from './helpers';

// ProducerStateManager over a real broker/log PartitionLog in a temp dir: snapshots, rebuild
// from the log after reopen, truncation, and snapshots that must not be trusted.

/** Produces `rounds` batches round-robin over producers 1..producers (2 records each). */
async function produceSome(r: LeaderReplica, producers: number, rounds: number, seqs: Map<number, number> = new Map()): Promise<Map<number, number>> {
  for (let i = 0; i < rounds; i++) {
    const pid = 1 + (i % producers);
    const seq = seqs.get(pid) ?? 0;
    const res = await r.produce([realBatch({ pid, seq, count: 2 })]);
    expect(res.kind).to.equal('append');
    seqs.set(pid, seq + 2);
    if (i % 4 === 3) await r.produce([realBatch({ pid: -1, seq: 0 })]); // non-idempotent traffic too
  }
  return seqs;
}

describe('producer state manager over a real partition log', () => {
  afterEach(cleanupDirs);

  it('snapshot encoding round-trips, and every flipped byte makes it untrusted', () => {
    const s: ProducerSnapshot = {
      endOffset: 1234,
      lastBatch: { lastOffset: 1233, crc: 0xdeadbeef },
      entries: [
        { producerId: 5, epoch: 2, lastTimestampMs: 1_700_000_000_000, batches: [{ firstSeq: 0, lastSeq: 4, firstOffset: 10, lastOffset: 14 }] },
        {
          producerId: 2 ** 40,
          epoch: 0,
          lastTimestampMs: 7,
          batches: [
            { firstSeq: 0x7ffffffe, lastSeq: 0, firstOffset: 100, lastOffset: 102 },
            { firstSeq: 1, lastSeq: 1, firstOffset: 1200, lastOffset: 1200 },
          ],
        },
      ],
    };
    const buf = encodeSnapshot(s);
    expect(decodeSnapshot(buf)).to.deep.equal(s);
    for (let i = 0; i < buf.length; i++) {
      const bad = Buffer.from(buf);
      bad[i] ^= 0x01;
      expect(typeof decodeSnapshot(bad), `byte ${i} flipped`).to.equal('string');
    }
    expect(typeof decodeSnapshot(buf.subarray(0, buf.length - 1))).to.equal('string');
  });

  it('after a clean close and reopen the state is the same, loaded from the close snapshot without replay', async () => {
    const dir = await tempDir('producer');
    const r = await LeaderReplica.open(dir);
    await produceSome(r, 7, 60);
    const before = ProducerStateTable.restore(r.guard.state.endOffset, r.guard.state.entries(), {}, r.guard.state.lastBatch);
    await r.close();
    expect(await listSnapshots(dir)).to.deep.equal([before.endOffset]);
    const again = await LeaderReplica.open(dir);
    expect(again.guard.lastRebuild).to.deep.equal({ snapshotOffset: before.endOffset, snapshotsRejected: 0, batchesReplayed: 0 });
    expectSameState(again.guard.state, before, 'reopened');
    await again.close();
  });

  it('after a crash (no close) the state is rebuilt from the last periodic snapshot plus the log, equal to the state before', async () => {
    const dir = await tempDir('producer');
    const r = await LeaderReplica.open(dir, { snapshotIntervalBatches: 16 });
    await produceSome(r, 5, 70);
    await r.guard.takeSnapshot(); // waits for background writes too
    await produceSome(r, 5, 9, new Map([[1, 28], [2, 28], [3, 28], [4, 28], [5, 28]]));
    const before = ProducerStateTable.restore(r.guard.state.endOffset, r.guard.state.entries());
    await r.log.close(); // the guard is dropped without close: a crash, for producer state
    const snaps = await listSnapshots(dir);
    expect(snaps.length, 'at most snapshotsRetained files').to.be.at.most(2);
    const again = await LeaderReplica.open(dir);
    expect(again.guard.lastRebuild.snapshotOffset).to.equal(snaps[snaps.length - 1]);
    expect(again.guard.lastRebuild.batchesReplayed).to.be.greaterThan(0);
    expectSameState(again.guard.state, before, 'rebuilt');
    // And it still answers retries: the last batch of producer 1 (seq 34..35) is a duplicate.
    const last = before.get(1)!.batches[before.get(1)!.batches.length - 1]!;
    expect(again.guard.check(headersOf(realBatch({ pid: 1, seq: last.firstSeq, count: 2 })))).to.deep.equal({
      kind: 'duplicate',
      baseOffset: last.firstOffset,
      lastOffset: last.lastOffset,
    });
    await again.close();
  });

  it('with every snapshot deleted the state is rebuilt from the log start, equal to the state before', async () => {
    const dir = await tempDir('producer');
    const r = await LeaderReplica.open(dir);
    await produceSome(r, 4, 40);
    const before = ProducerStateTable.restore(r.guard.state.endOffset, r.guard.state.entries());
    await r.close();
    for (const o of await listSnapshots(dir)) await fs.unlink(path.join(dir, snapshotFileName(o)));
    const again = await LeaderReplica.open(dir);
    expect(again.guard.lastRebuild.snapshotOffset).to.equal(undefined);
    expectSameState(again.guard.state, before, 'from the log start');
    await again.close();
  });

  it('a corrupt newest snapshot is ignored and deleted; an older one plus the log gives the same state', async () => {
    const dir = await tempDir('producer');
    const r = await LeaderReplica.open(dir, { snapshotsRetained: 3 });
    await produceSome(r, 3, 12);
    await r.guard.takeSnapshot();
    const older = r.guard.state.endOffset;
    const seqs = await produceSome(r, 3, 12, new Map([[1, 8], [2, 8], [3, 8]]));
    expect(seqs.get(1)).to.equal(16);
    const before = ProducerStateTable.restore(r.guard.state.endOffset, r.guard.state.entries());
    await r.close();
    const newest = before.endOffset;
    const file = path.join(dir, snapshotFileName(newest));
    const bytes = await fs.readFile(file);
    bytes[bytes.length - 3] ^= 0xff; // one flipped bit in a batch entry: the CRC catches it
    await fs.writeFile(file, bytes);
    const again = await LeaderReplica.open(dir);
    expect(again.guard.lastRebuild.snapshotOffset).to.equal(older);
    expect(again.guard.lastRebuild.snapshotsRejected).to.equal(1);
    expect(await listSnapshots(dir)).to.not.include(newest);
    expectSameState(again.guard.state, before, 'from the older snapshot');
    await again.close();
  });

  it('a snapshot from another history (its last batch is not in the log) is not trusted', async () => {
    const dir = await tempDir('producer');
    const r = await LeaderReplica.open(dir);
    await produceSome(r, 2, 6);
    const before = ProducerStateTable.restore(r.guard.state.endOffset, r.guard.state.entries());
    await r.close();
    // A well-formed snapshot at the log end, but with a CRC the log's last batch does not have
    // and a state that would answer a producer wrongly.
    const end = before.endOffset;
    const forged = encodeSnapshot({
      endOffset: end,
      lastBatch: { lastOffset: end - 1, crc: 12345 },
      entries: [{ producerId: 1, epoch: 0, lastTimestampMs: 1, batches: [{ firstSeq: 0, lastSeq: 99, firstOffset: 0, lastOffset: 0 }] }],
    });
    await fs.writeFile(path.join(dir, snapshotFileName(end)), forged);
    const again = await LeaderReplica.open(dir);
    expect(again.guard.lastRebuild.snapshotsRejected).to.equal(1);
    expectSameState(again.guard.state, before, 'rebuilt from the log instead');
    await again.close();
  });

  it('a snapshot above the log end (the log lost its tail) is deleted on open', async () => {
    const dir = await tempDir('producer');
    const r = await LeaderReplica.open(dir);
    await produceSome(r, 2, 6);
    await r.close();
    const end = r.guard.state.endOffset;
    await fs.writeFile(path.join(dir, snapshotFileName(end + 50)), encodeSnapshot({ endOffset: end + 50, lastBatch: null, entries: [] }));
    const again = await LeaderReplica.open(dir);
    expect(await listSnapshots(dir)).to.deep.equal([end]);
    await again.close();
  });

  it('truncation drops the snapshots above the new end and rebuilds the state the log now implies', async () => {
    const dir = await tempDir('producer');
    const r = await LeaderReplica.open(dir, { snapshotsRetained: 5 });
    await produceSome(r, 3, 9);
    await r.guard.takeSnapshot();
    const keepEnd = r.guard.state.endOffset;
    const atKeep = ProducerStateTable.restore(keepEnd, r.guard.state.entries());
    await produceSome(r, 3, 9, new Map([[1, 6], [2, 6], [3, 6]]));
    await r.guard.takeSnapshot();
    expect((await listSnapshots(dir)).length).to.equal(2);
    await r.truncateTo(keepEnd);
    expect(await listSnapshots(dir)).to.deep.equal([keepEnd]);
    expectSameState(r.guard.state, atKeep, 'after truncation');
    // The producers continue from the truncated state: producer 1 must resend from seq 6.
    expectThrowsFlotilla(() => r.guard.check(headersOf(realBatch({ pid: 1, seq: 12 }))), 'OUT_OF_ORDER_SEQUENCE');
    expect((await r.produce([realBatch({ pid: 1, seq: 6, count: 2 })])).kind).to.equal('append');
    await r.close();
    const again = await LeaderReplica.open(dir);
    expect(again.guard.state.get(1)!.batches.at(-1)).to.deep.include({ firstSeq: 6, lastSeq: 7 });
    await again.close();
  });

  it('truncation into the middle, below every snapshot, rebuilds from the log start', async () => {
    const dir = await tempDir('producer');
    const r = await LeaderReplica.open(dir, { snapshotIntervalBatches: 4 });
    await produceSome(r, 2, 20);
    await r.guard.takeSnapshot();
    const reference = await LeaderReplica.open(await tempDir('producer-ref'));
    await produceSome(reference, 2, 3); // the same first 3 rounds: offsets 0..5
    const cut = reference.guard.state.endOffset;
    await r.truncateTo(cut);
    expect(r.guard.lastRebuild.snapshotOffset).to.equal(undefined);
    expectSameState(r.guard.state, reference.guard.state, 'truncated = fresh log with the same prefix');
    await r.close();
    await reference.close();
  });

  it('a follower emptied and restarted at an offset (truncateFullyAndStartAt) keeps no producer and no snapshot', async () => {
    const dir = await tempDir('producer');
    const r = await LeaderReplica.open(dir);
    await produceSome(r, 2, 6);
    await r.guard.takeSnapshot();
    await r.log.truncateFullyAndStartAt(500);
    await r.guard.onTruncated(500);
    expect(r.guard.state.size).to.equal(0);
    expect(r.guard.state.endOffset).to.equal(500);
    expect(await listSnapshots(dir)).to.deep.equal([]);
    // A follower applies the leader's batches from there.
    const fetched = realBatch({ pid: 1, seq: 40, count: 3 });
    const hs = headersOf(fetched).map((h) => ({ ...h, baseOffset: 500, lastOffset: 502 }));
    r.guard.onAppended(hs);
    expect(r.guard.state.get(1)!.batches).to.deep.equal([{ firstSeq: 40, lastSeq: 42, firstOffset: 500, lastOffset: 502 }]);
    await r.close();
  });

  it('producers idle for producer.id.expiration.ms are gone after a reopen (the clock is injected)', async () => {
    const dir = await tempDir('producer');
    const r = await LeaderReplica.open(dir, { nowMs: () => 2_000 });
    await r.produce([realBatch({ pid: 1, seq: 0, timestampMs: 1_000 })]);
    await r.produce([realBatch({ pid: 2, seq: 0, timestampMs: 50_000 })]);
    await r.close();
    const again = await LeaderReplica.open(dir, { nowMs: () => 60_000, limits: { producerIdExpirationMs: 20_000 } });
    expect(again.guard.state.entries().map((e) => e.producerId)).to.deep.equal([2]);
    await again.close();
  });

  it('a follower state equals the leader state: onAppended with the leader\'s offsets on a second log', async () => {
    const leader = await LeaderReplica.open(await tempDir('producer-leader'));
    const fdir = await tempDir('producer-follower');
    const flog = await PartitionLog.open({ dir: fdir });
    const follower = await ProducerStateManager.open({ dir: fdir, log: flog, nowMs: TEST_NOW_MS });
    await produceSome(leader, 3, 15);
    let next = 0;
    while (next < leader.log.logEndOffset) {
      const got = await leader.log.read(next, 300, 'logEnd');
      await flog.append(got.records, { assignOffsets: false, leaderEpoch: 0 });
      follower.onAppended(headersOf(got.records));
      next = got.nextOffset;
    }
    expectSameState(follower.state, leader.guard.state, 'follower');
    await follower.close();
    await flog.close();
    await leader.close();
  });
});
