import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { expect } from 'chai';
import { ConfChangeType, Entry, EntryType, Snapshot, decodeConfChange } from '../../controller/raft';
import { RaftStorage, SNAPSHOT_VALUE_BYTES } from '../../controller/raft-driver/raft-storage';

const CONF = { voters: [1, 2, 3], learners: [] };

function entry(index: number, term: number, text = `e${index}`): Entry {
  return { index, term, type: EntryType.Normal, data: Buffer.from(text) };
}

function entries(from: number, to: number, term: number): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) out.push(entry(i, term));
  return out;
}

function snapshot(index: number, term: number, data: Uint8Array): Snapshot {
  return { metadata: { index, term, confState: { voters: [1, 2, 3], learners: [4] } }, data };
}

/** Entries as plain values, for deep equality across Buffer/Uint8Array views. */
function plain(es: readonly Entry[]): { index: number; term: number; type: EntryType; data: string }[] {
  return es.map((e) => ({ index: e.index, term: e.term, type: e.type, data: Buffer.from(e.data).toString() }));
}

describe('raft-driver RaftStorage', function () {
  this.timeout(20_000);
  let dir: string;
  let storage: RaftStorage | undefined;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-raft-storage-'));
  });

  afterEach(async () => {
    await storage?.close();
    storage = undefined;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function reopen(): Promise<RaftStorage> {
    await storage?.close();
    storage = await RaftStorage.open(dir);
    return storage;
  }

  it('writes the bootstrap voters into the log as committed AddVoter entries of term 1', async () => {
    const s = await reopen();
    const st = await s.load(CONF);
    expect(st.hardState).to.deep.equal({ term: 1, vote: 0, commit: CONF.voters.length });
    expect(st.snapshot).to.equal(undefined);
    expect(st.entries.map((e) => [e.index, e.term, e.type, decodeConfChange(e.data)])).to.deep.equal(
      CONF.voters.map((id, i) => [i + 1, 1, EntryType.ConfChange, { type: ConfChangeType.AddVoter, nodeId: id }]),
    );
    // The core replays the membership from those entries, not from a side configuration.
    expect(st.initialConfState).to.deep.equal({ voters: [], learners: [] });
    expect(st.applied).to.equal(0);
  });

  it('writes nothing for a joining node (it learns the membership from the leader)', async () => {
    const st = await (await reopen()).load({ voters: [], learners: [] });
    expect(st.entries).to.deep.equal([]);
    expect(st.hardState).to.deep.equal({ term: 0, vote: 0, commit: 0 });
  });

  it('keeps the first bootstrap membership even if the configured voters change later', async () => {
    await (await reopen()).load(CONF);
    const st = await (await reopen()).load({ voters: [7], learners: [] });
    expect(st.entries.map((e) => decodeConfChange(e.data).nodeId)).to.deep.equal(CONF.voters);
  });

  it('persist -> reopen -> load returns the same hard state and entries', async () => {
    let s = await reopen();
    await s.load(CONF);
    const es = [...entries(1, 4, 1), { index: 5, term: 2, type: EntryType.ConfChange, data: new Uint8Array([0, 0, 0, 0, 4]) }];
    await s.persist({ entries: es, hardState: { term: 2, vote: 3, commit: 4 } });
    s = await reopen();
    const st = await s.load(CONF);
    expect(st.hardState).to.deep.equal({ term: 2, vote: 3, commit: 4 });
    expect(plain(st.entries)).to.deep.equal(plain(es));
    expect(st.applied).to.equal(0);
  });

  it('a commit-only Ready is not written (no fsync); the next written batch or a clean close stores the newest commit index', async () => {
    let s = await reopen();
    await s.load(CONF);
    await s.persist({ entries: entries(1, 6, 1), hardState: { term: 1, vote: 1, commit: 2 } });
    expect(await s.persist({ entries: [], hardState: { term: 1, vote: 1, commit: 5 } }), 'commit-only: no fsync').to.equal(false);
    // The next synced write carries the newest commit index along.
    await s.persist({ entries: [entry(7, 1)], hardState: undefined });
    s = await reopen();
    expect((await s.load(CONF)).hardState).to.deep.equal({ term: 1, vote: 1, commit: 5 });
    // And a clean close writes a pending commit index.
    await s.persist({ entries: [], hardState: { term: 1, vote: 1, commit: 7 } });
    s = await reopen();
    expect((await s.load(CONF)).hardState).to.deep.equal({ term: 1, vote: 1, commit: 7 });
  });

  it('a conflicting append replaces every stored entry from its first index on', async () => {
    let s = await reopen();
    await s.load(CONF);
    await s.persist({ entries: entries(1, 6, 1), hardState: { term: 1, vote: 1, commit: 2 } });
    // A new leader of term 2 overwrites the uncommitted suffix from index 3 with one entry.
    await s.persist({ entries: [entry(3, 2, 'new3')], hardState: { term: 2, vote: 2, commit: 2 } });
    s = await reopen();
    const st = await s.load(CONF);
    expect(plain(st.entries)).to.deep.equal(plain([entry(1, 1), entry(2, 1), entry(3, 2, 'new3')]));
    expect(s.range()).to.deep.equal({ firstIndex: 1, lastIndex: 3, snapshotIndex: 0 });
  });

  it('saveSnapshotAndCompact removes the entries <= the snapshot index and keeps the rest', async () => {
    let s = await reopen();
    await s.load(CONF);
    await s.persist({ entries: entries(1, 10, 1), hardState: { term: 1, vote: 1, commit: 10 } });
    await s.saveSnapshotAndCompact(snapshot(6, 1, Buffer.from('state@6')));
    s = await reopen();
    const st = await s.load(CONF);
    expect(st.snapshot?.metadata).to.deep.equal({ index: 6, term: 1, confState: { voters: [1, 2, 3], learners: [4] } });
    expect(Buffer.from(st.snapshot!.data).toString()).to.equal('state@6');
    expect(st.entries.map((e) => e.index)).to.deep.equal([7, 8, 9, 10]);
    expect(st.applied).to.equal(6);
  });

  it('stores a snapshot larger than one value in chunks, and shrinks back cleanly', async () => {
    let s = await reopen();
    await s.load(CONF);
    await s.persist({ entries: entries(1, 4, 1), hardState: { term: 1, vote: 1, commit: 4 } });
    const big = Buffer.alloc(2 * SNAPSHOT_VALUE_BYTES + 12345);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
    await s.saveSnapshotAndCompact(snapshot(2, 1, big));
    s = await reopen();
    let st = await s.load(CONF);
    expect(Buffer.compare(Buffer.from(st.snapshot!.data), big)).to.equal(0);

    await s.saveSnapshotAndCompact(snapshot(4, 1, Buffer.from('small')));
    s = await reopen();
    st = await s.load(CONF);
    expect(st.snapshot!.metadata.index).to.equal(4);
    expect(Buffer.from(st.snapshot!.data).toString()).to.equal('small');
    expect(st.entries).to.deep.equal([]);
  });

  it('a snapshot received from the leader replaces the whole log', async () => {
    let s = await reopen();
    await s.load(CONF);
    await s.persist({ entries: entries(1, 5, 1), hardState: { term: 1, vote: 1, commit: 3 } });
    // Diverged follower: the leader sends a snapshot at 20 (term 3) then entries 21..22.
    await s.persist({
      snapshot: snapshot(20, 3, Buffer.from('state@20')),
      entries: entries(21, 22, 3),
      hardState: { term: 3, vote: 0, commit: 20 },
    });
    s = await reopen();
    const st = await s.load(CONF);
    expect(st.snapshot!.metadata.index).to.equal(20);
    expect(st.entries.map((e) => e.index)).to.deep.equal([21, 22]);
    expect(st.hardState).to.deep.equal({ term: 3, vote: 0, commit: 20 });
    expect(st.applied).to.equal(20);
  });

  it('syncs when entries, term or vote change, and not for a commit-only change (etcd MustSync)', async () => {
    const s = await reopen();
    await s.load(CONF);
    expect(await s.persist({ entries: entries(1, 2, 1), hardState: { term: 1, vote: 1, commit: 0 } })).to.equal(true);
    expect(await s.persist({ entries: [], hardState: { term: 1, vote: 1, commit: 2 } })).to.equal(false);
    expect(await s.persist({ entries: [], hardState: { term: 2, vote: 0, commit: 2 } })).to.equal(true);
    const st = await (await reopen()).load(CONF);
    expect(st.hardState).to.deep.equal({ term: 2, vote: 0, commit: 2 });
  });

  it('refuses an append that would leave a gap (a driver bug)', async () => {
    const s = await reopen();
    await s.load(CONF);
    await s.persist({ entries: entries(1, 2, 1) });
    let err: Error | undefined;
    try {
      await s.persist({ entries: [entry(5, 1)] });
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).to.match(/gap/);
  });
});
