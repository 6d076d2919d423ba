import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { expect } from 'chai';
import { LEADER_EPOCH_CHECKPOINT_FILE, LeaderEpochCache } from '../../broker/log';
import { cleanupDirs, tempDir } from './helpers';

// The leader-epoch cache on its own: KIP-101/KIP-279 end offsets, truncation from both ends,
// and the checkpoint file surviving a reopen.

describe('broker/log: leader-epoch cache', () => {
  afterEach(cleanupDirs);

  async function cacheWith(entries: [number, number][]): Promise<{ cache: LeaderEpochCache; dir: string }> {
    const dir = await tempDir('epochs');
    const { cache, status } = await LeaderEpochCache.open(dir);
    expect(status).to.equal('missing');
    for (const [epoch, start] of entries) await cache.assign(epoch, start);
    return { cache, dir };
  }

  it('endOffsetFor: the latest epoch ends at the log end; an older one where the next epoch began (KIP-101)', async () => {
    const { cache } = await cacheWith([
      [1, 0],
      [3, 100],
      [5, 200],
    ]);
    const leo = 300;
    expect(cache.endOffsetFor(5, leo)).to.deep.equal({ epoch: 5, endOffset: 300 });
    expect(cache.endOffsetFor(3, leo)).to.deep.equal({ epoch: 3, endOffset: 200 });
    // An epoch this replica never saw: the largest epoch below it and where the next began (KIP-279).
    expect(cache.endOffsetFor(4, leo)).to.deep.equal({ epoch: 3, endOffset: 200 });
    expect(cache.endOffsetFor(2, leo)).to.deep.equal({ epoch: 1, endOffset: 100 });
    // Below every known epoch: where the first known epoch started.
    expect(cache.endOffsetFor(0, leo)).to.deep.equal({ epoch: 0, endOffset: 0 });
    // Above the latest, or unknown: undefined.
    expect(cache.endOffsetFor(6, leo)).to.deep.equal({ epoch: -1, endOffset: -1 });
    expect(cache.endOffsetFor(-1, leo)).to.deep.equal({ epoch: -1, endOffset: -1 });
    expect(cache.epochForOffset(150)).to.equal(3);
    expect(cache.epochForOffset(200)).to.equal(5);
  });

  it('assign is a no-op for the latest epoch and drops entries a new one contradicts', async () => {
    const { cache } = await cacheWith([
      [1, 0],
      [3, 100],
    ]);
    expect(await cache.assign(3, 150)).to.equal(false);
    expect(await cache.assign(4, 120)).to.equal(true);
    expect(cache.list()).to.deep.equal([
      { epoch: 1, startOffset: 0 },
      { epoch: 3, startOffset: 100 },
      { epoch: 4, startOffset: 120 },
    ]);
    // The log says epoch 2 starts at 90: entries with epoch >= 2 or start >= 90 go.
    await cache.assign(2, 90);
    expect(cache.list()).to.deep.equal([
      { epoch: 1, startOffset: 0 },
      { epoch: 2, startOffset: 90 },
    ]);
  });

  it('truncateFromEnd drops epochs starting at or after the new end; truncateFromStart moves the first', async () => {
    const { cache } = await cacheWith([
      [1, 0],
      [3, 100],
      [5, 200],
    ]);
    await cache.truncateFromEnd(200);
    expect(cache.list().map((e) => e.epoch)).to.deep.equal([1, 3]);
    await cache.truncateFromStart(150);
    expect(cache.list()).to.deep.equal([{ epoch: 3, startOffset: 150 }]);
    await cache.truncateFromStart(50); // already past it: nothing changes
    expect(cache.list()).to.deep.equal([{ epoch: 3, startOffset: 150 }]);
  });

  it('persists every change in its checkpoint (no temp file left), and a reopen reads it back', async () => {
    const { cache, dir } = await cacheWith([
      [0, 0],
      [2, 10],
    ]);
    await cache.truncateFromEnd(10);
    await cache.assign(7, 40);
    expect(await fs.readdir(dir)).to.deep.equal([LEADER_EPOCH_CHECKPOINT_FILE]);
    expect(await fs.readFile(path.join(dir, LEADER_EPOCH_CHECKPOINT_FILE), 'utf8')).to.equal('0\n2\n0 0\n7 40\n');
    const again = await LeaderEpochCache.open(dir);
    expect(again.status).to.equal('loaded');
    expect(again.cache.list()).to.deep.equal(cache.list());
  });

  it('an unreadable checkpoint is reported as corrupt (the log then rebuilds it)', async () => {
    const dir = await tempDir('epochs');
    for (const text of ['garbage', '0\n2\n1 0\n', '0\n2\n3 10\n2 20\n', '1\n0\n']) {
      await fs.writeFile(path.join(dir, LEADER_EPOCH_CHECKPOINT_FILE), text);
      expect((await LeaderEpochCache.open(dir)).status, JSON.stringify(text)).to.equal('corrupt');
    }
  });
});
